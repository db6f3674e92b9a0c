#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `index.json`: the single truth about which layers of a tenant exist.
///
/// Replaced atomically: written to `index.json.___temp`, fsynced, renamed
/// over `index.json`, and the directory fsynced. A layer is visible only once
/// this file lists it; a file it does not list is swept at the next load.
///
/// Format 2 carries a CRC-32C of itself (over its encoding with the checksum
/// left out), so one flipped digit is damage, not a different truth; format 1
/// (layergate 0.1) had none and is still read. Either way the disk-consistent
/// LSN must be where the listed layers end.
public struct IndexFile: Codable, Equatable, Sendable {
    public static let fileName = "index.json"
    static let tempName = "index.json.___temp"
    static let formatVersion = 2
    /// Far more than an index of 50,000 layers; a larger file is damage.
    static let maxBytes = 16 << 20

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
    /// CRC-32C of this index encoded without it (format 2).
    public var checksum: UInt32?

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case tenantId = "tenant_id"
        case generation
        case diskConsistentLsn = "disk_consistent_lsn"
        case gcCutoffLsn = "gc_cutoff_lsn"
        case layers
        case checksum
    }

    public init(tenant: TenantId) {
        formatVersion = Self.formatVersion
        tenantId = tenant.description
        generation = 0
        diskConsistentLsn = 0
        gcCutoffLsn = 0
        layers = []
    }

    static func read(directory: DirectoryHandle) throws(StorageError) -> IndexFile {
        let path = directory.child(fileName)
        let bytes: [UInt8]
        do throws(StorageError) { bytes = try RawFile.open(directory.fs, path, .readOnly).readAll(limit: maxBytes) } catch {
            if case .io(_, _, let e) = error, e == EFBIG || e == EINVAL { throw .corruptIndex(file: path, reason: "\(error)") }
            throw error
        }
        let index: IndexFile
        do {
            index = try JSONDecoder().decode(IndexFile.self, from: Data(bytes))
        } catch {
            throw .corruptIndex(file: path, reason: "does not parse (\(bytes.count) bytes): \(error)")
        }
        switch index.formatVersion {
        case 1: break
        case formatVersion:
            guard let stored = index.checksum, stored == index.computedChecksum() else {
                throw .corruptIndex(file: path, reason: "checksum mismatch (the file was changed or damaged)")
            }
        default:
            throw .corruptIndex(file: path, reason: "unsupported format version \(index.formatVersion)")
        }
        let end = index.layers.compactMap { LayerName(parsing: $0.name)?.lsnEnd.rawValue }.max() ?? 0
        guard index.diskConsistentLsn == end else {
            throw .corruptIndex(file: path, reason: "disk_consistent_lsn \(Lsn(index.diskConsistentLsn)) is not where the listed layers end (\(Lsn(end)))")
        }
        var seen = Set<String>()
        for layer in index.layers {
            guard LayerName(parsing: layer.name) != nil, layer.size > 0, seen.insert(layer.name).inserted else {
                throw .corruptIndex(file: path, reason: "bad or repeated layer entry '\(layer.name)'")
            }
        }
        return index
    }

    /// The generation the next load records; a tenant cannot outlive 2^32 loads.
    func nextGeneration(path: String) throws(StorageError) -> UInt32 {
        guard generation < UInt32.max else {
            throw .corruptIndex(file: path, reason: "generation \(generation) cannot grow any further")
        }
        return generation + 1
    }

    private static func encode(_ index: IndexFile) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { return try encoder.encode(index) } catch {
            preconditionFailure("index encoding cannot fail: \(error)")
        }
    }

    func computedChecksum() -> UInt32 {
        var bare = self
        bare.checksum = nil
        return Checksum.crc32c(Array(Self.encode(bare)))
    }

    /// Writes this index in place of the current one, atomically, as format 2.
    func write(directory: DirectoryHandle, failpoints: Failpoints) throws(StorageError) {
        var sealed = self
        sealed.formatVersion = Self.formatVersion
        sealed.checksum = sealed.computedChecksum()
        let data = Self.encode(sealed)
        // What a load would refuse is never written: the commit fails instead, and the tenant serves on.
        guard data.count <= Self.maxBytes else {
            throw .resourceExhausted(
                "tenant \(StorageError.printable(tenantId)): index.json would list \(layers.count) layers in \(data.count) bytes, more than the \(Self.maxBytes >> 20) MiB a load reads; compact the tenant")
        }
        let fs = directory.fs
        let temp = directory.child(Self.tempName)
        let final = directory.child(Self.fileName)
        do throws(StorageError) {
            let file = try RawFile.open(fs, temp, .createTruncate)
            try file.write(Array(data), at: 0)
            file.sync()
            file.close()
            try failpoints.hit("index-before-rename")
            do throws(SystemError) { try fs.rename(temp, final) } catch {
                throw StorageError.io(operation: "rename", path: final, errno: error.errno)
            }
        } catch {
            try? fs.unlink(temp)
            throw error
        }
        directory.sync()
    }

    var layerNames: Set<String> { Set(layers.map(\.name)) }
}
