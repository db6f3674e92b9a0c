import Foundation

/// `index.json`: the single truth about which layers of a tenant exist.
///
/// Replaced atomically: written to `index.json.___temp`, fsynced, renamed
/// over `index.json`, and the directory fsynced. A layer is visible only once
/// this file lists it; a file it does not list is swept at the next load.
public struct IndexFile: Codable, Equatable, Sendable {
    public static let fileName = "index.json"
    static let tempName = "index.json.___temp"
    static let formatVersion = 1

    public struct Layer: Codable, Equatable, Sendable {
        public var name: String
        public var size: Int
        /// 0 for L0 deltas (flushes), 1 for compaction output. Absent means 0.
        public var level: Int?

        public init(name: String, size: Int, level: Int) {
            self.name = name
            self.size = size
            self.level = level
        }
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

    public init(tenant: TenantId) {
        formatVersion = Self.formatVersion
        tenantId = tenant.description
        generation = 0
        diskConsistentLsn = 0
        gcCutoffLsn = 0
        layers = []
    }

    static func read(directory: String) throws(StorageError) -> IndexFile {
        let path = directory + "/" + fileName
        let bytes = try RawFile.openReadOnly(path).readAll()
        let index: IndexFile
        do {
            index = try JSONDecoder().decode(IndexFile.self, from: Data(bytes))
        } catch {
            throw .corruptIndex(file: path, reason: "does not parse: \(error)")
        }
        guard index.formatVersion == formatVersion else {
            throw .corruptIndex(file: path, reason: "unsupported format version \(index.formatVersion)")
        }
        var seen = Set<String>()
        for layer in index.layers {
            guard LayerName(parsing: layer.name) != nil, layer.size > 0, seen.insert(layer.name).inserted else {
                throw .corruptIndex(file: path, reason: "bad or repeated layer entry '\(layer.name)'")
            }
        }
        return index
    }

    /// Writes this index in place of the current one, atomically.
    func write(directory: String, failpoints: Failpoints) throws(StorageError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do { data = try encoder.encode(self) } catch {
            preconditionFailure("index encoding cannot fail: \(error)")
        }
        let temp = directory + "/" + Self.tempName
        let final = directory + "/" + Self.fileName
        do throws(StorageError) {
            let file = try RawFile.open(temp, flags: O_WRONLY | O_CREAT | O_TRUNC)
            try file.write(Array(data), at: 0)
            file.sync()
            file.close()
            try failpoints.hit("index-before-rename")
            guard rename(temp, final) == 0 else { throw StorageError.io(operation: "rename", path: final, errno: errno) }
        } catch {
            _ = unlink(temp)
            throw error
        }
        Directory.fsync(directory)
    }

    var layerNames: Set<String> { Set(layers.map(\.name)) }
}
