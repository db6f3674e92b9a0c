import LayerGateStorage
import LayerGateTestSupport

@testable import LayerGateStorage

/// Files read back from a disk that may have been damaged, on a simulated
/// disk (no I/O per run).
enum StorageTargets {
    static let tenant = CrashWorkload.tenant
    /// One name per kind: the same bytes are tried as a delta and as an image layer.
    static let layerNames = [
        "0000067f00000005000003e80000000000-0000067f00000005000003e800000000ff__000000000000000a-000000000000000b-g00000001",
        "0000067f00000005000003e80000000000-0000067f00000005000003e800000000ff__000000000000000b-g00000001",
    ]

    static func layer(_ bytes: UnsafeRawBufferPointer) {
        let disk = SimulatedDisk()
        guard let dir = try? DirectoryHandle(fs: disk, path: "") else { return }
        for text in layerNames {
            guard let name = LayerName(parsing: text), (try? write(disk, text, bytes)) != nil else { continue }
            do throws(StorageError) {
                let reader = try LayerReader(directory: dir, name: name, tenant: tenant, cache: PageCache(capacity: 4),
                                             openFiles: OpenFileTable(fs: disk, capacity: 2))
                let entries = try reader.allEntries()
                for e in entries.prefix(256) { _ = try reader.value(of: e) }
                var map = LayerMap()
                map.insert(TenantLayer(reader, download: nil))
                for e in entries.prefix(16) {
                    _ = try ReadPath.reconstruct(key: e.key, lsn: name.lsnEnd, open: InMemoryLayer(startLsn: name.lsnEnd.next),
                                                 frozen: [], layers: map)
                }
            } catch {
                continue
            }
        }
    }

    static func wal(_ bytes: UnsafeRawBufferPointer) {
        let disk = SimulatedDisk()
        guard (try? write(disk, Wal.segmentName(Lsn(1)), bytes)) != nil,
              let dir = try? DirectoryHandle(fs: disk, path: "") else { return }
        _ = try? WalReplay.replay(directory: dir, tenant: tenant, maxSegmentBytes: 1 << 20)
    }

    static func write(_ disk: SimulatedDisk, _ name: String, _ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        let fd = try disk.open(name, .createTruncate)
        defer { disk.close(fd) }
        _ = try disk.pwrite(fd, from: bytes, at: 0)
    }
}
