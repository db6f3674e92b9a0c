import Foundation

/// A tenant's remote index, `tenants/<id>/index_part.json-<generation, 8 hex>`:
/// the layers of one local index.json that are uploaded, each with the CRC-32C
/// of its object, so a later upload under a taken key can be told to be a
/// retry of the same bytes. Written only once every layer it lists is stored.
public struct RemoteIndex: Codable, Equatable, Sendable {
    static let formatVersion = 1
    static let namePrefix = "index_part.json-"
    /// As for index.json: more is damage.
    static let maxBytes = IndexFile.maxBytes

    public struct Layer: Codable, Equatable, Sendable {
        public var name: String
        public var size: Int
        public var level: Int?
        public var crc32c: UInt32
    }

    public var formatVersion: Int
    public var tenantId: String
    public var generation: UInt32
    public var diskConsistentLsn: UInt64
    public var gcCutoffLsn: UInt64
    public var layers: [Layer]

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case tenantId = "tenant_id"
        case generation
        case diskConsistentLsn = "disk_consistent_lsn"
        case gcCutoffLsn = "gc_cutoff_lsn"
        case layers
    }

    /// The remote form of `local`, whose every layer has its checksum in `crcs`.
    init(_ local: IndexFile, crcs: [String: UInt32]) {
        formatVersion = Self.formatVersion
        tenantId = local.tenantId
        generation = local.generation
        diskConsistentLsn = local.diskConsistentLsn
        gcCutoffLsn = local.gcCutoffLsn
        layers = local.layers.map { l in
            guard let crc = crcs[l.name] else { preconditionFailure("a remote index lists only uploaded layers: \(l.name)") }
            return Layer(name: l.name, size: l.size, level: l.level, crc32c: crc)
        }
    }

    /// Where the objects of `tenant` live.
    static func prefix(_ tenant: TenantId) -> String { "tenants/\(tenant)/" }

    static func key(_ tenant: TenantId, generation: UInt32) -> String {
        prefix(tenant) + namePrefix + Hex.fixed(UInt64(generation), digits: 8)
    }

    static func layerKey(_ tenant: TenantId, _ layerName: String) -> String { prefix(tenant) + layerName }

    /// The generation of a key that names a remote index, or nil.
    static func generation(ofKey key: String) -> UInt32? {
        guard let name = key.split(separator: "/").last, name.hasPrefix(namePrefix) else { return nil }
        let digits = name.dropFirst(namePrefix.count)
        guard digits.count == 8, digits.allSatisfy(\.isHexDigit) else { return nil }
        return UInt32(digits, radix: 16)
    }

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { return Array(try encoder.encode(self)) } catch { preconditionFailure("remote index encoding cannot fail: \(error)") }
    }

    /// Parses and checks an index read from the store (untrusted bytes).
    /// The remote index of `generation`, which a listing just showed, and its
    /// bytes (their checksum tells whose body it is).
    static func fetch(_ tenant: TenantId, generation: UInt32, from store: any RemoteStore)
        throws(RemoteError) -> (index: RemoteIndex, bytes: [UInt8])
    {
        let key = key(tenant, generation: generation)
        guard let bytes = try store.get(key, limit: maxBytes) else {
            throw .unavailable(operation: "get", key: key, reason: "listed, then not found")
        }
        return (try decode(bytes, key: key, tenant: tenant), bytes)
    }

    static func decode(_ bytes: [UInt8], key: String, tenant: TenantId) throws(RemoteError) -> RemoteIndex {
        let index: RemoteIndex
        do { index = try JSONDecoder().decode(RemoteIndex.self, from: Data(bytes)) } catch {
            throw .corruptIndex(key: key, reason: "does not parse (\(bytes.count) bytes): \(error)")
        }
        guard index.formatVersion == formatVersion else {
            throw .corruptIndex(key: key, reason: "unsupported format version \(index.formatVersion)")
        }
        guard index.tenantId == tenant.description, generation(ofKey: key) == index.generation else {
            throw .corruptIndex(key: key, reason: "names tenant \(StorageError.printable(index.tenantId)) generation \(index.generation)")
        }
        var seen = Set<String>()
        var end: UInt64 = 0
        for layer in index.layers {
            guard let name = LayerName(parsing: layer.name), layer.size > 0, seen.insert(layer.name).inserted else {
                throw .corruptIndex(key: key, reason: "bad or repeated layer entry '\(StorageError.printable(layer.name))'")
            }
            end = max(end, name.lsnEnd.rawValue)
        }
        guard index.diskConsistentLsn == end else {
            throw .corruptIndex(key: key, reason: "disk_consistent_lsn \(Lsn(index.diskConsistentLsn)) is not where the listed layers end (\(Lsn(end)))")
        }
        return index
    }
}
