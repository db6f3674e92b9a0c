import Foundation
import LayerGateTestSupport
import Synchronization
import Testing

@testable import LayerGateStorage

/// GetPage misses: one disk read per value, on threads of their own.
@Suite("Cold reads")
struct ColdReadTests {
    /// A version 2 image starts at a block boundary (its checksum is in the
    /// index): one block, one disk read. A version 1 image spans two blocks
    /// (its 8-byte header came first), and both come in one pread. Either
    /// way, with every read after the first failing, the value still reads,
    /// and reads again with no I/O.
    @Test(arguments: [LayerFormat.Version.v1, .v2])
    func anImageIsOneDiskRead(version: LayerFormat.Version) throws {
        let disk = SimulatedDisk()
        let dir = try DirectoryHandle(fs: disk, path: "")
        let records = (0..<6 as Range<UInt32>).map { image(key($0), 10) }
        let w = try LayerWriter(directory: dir, tenant: testTenant, kind: .delta, lsnStart: Lsn(10), lsnEnd: Lsn(10),
                                generation: 1, failpoints: Failpoints(), mechanism: .automatic, version: version)
        for r in records { try w.append(key: r.key, lsn: r.lsn, value: r.value) }
        let d = try w.finish()
        let cache = PageCache(capacity: 64)
        let reader = try LayerReader(directory: dir, name: d.name, tenant: testTenant, cache: cache,
                                     openFiles: OpenFileTable(fs: disk, capacity: 2))
        let entries = try reader.allEntries()  // the index block, cached from here on
        let blocks: UInt64 = version == .v1 ? 2 : 1
        for (i, e) in entries.enumerated() {
            #expect((e.offset + UInt64(e.length) - 1) / 8192 - e.offset / 8192 + 1 == blocks, "value \(i) spans \(blocks) blocks")
            let missesBefore = cache.stats.misses
            disk.inject(.init([.read], errno: EIO, skip: 1))
            // The blocks this value shares with its neighbours may be cached already: then no read at all.
            let cold = !cache.contains(file: reader.fileId, block: e.offset / 8192)
            #expect(try reader.value(of: e) == records[i].value, "value \(i) in one read")
            if cold { #expect(cache.stats.misses - missesBefore == blocks, "each block counts as a miss") }
            disk.clearFaults()
            disk.inject(.init([.read], errno: EIO))
            #expect(try reader.value(of: e) == records[i].value, "value \(i) again, from the cache")
            disk.clearFaults()
        }
    }

    /// More reads at once than threads: every one runs, once, with its own result or error.
    @Test func readThreadsRunEveryJobOnce() async throws {
        let pool = ReadThreads(limit: 3)
        let peak = Peak()
        try await withThrowingTaskGroup(of: (Int, Int?).self) { group in
            for i in 0..<200 {
                group.addTask {
                    do throws(StorageError) {
                        let v = try await pool.run { () throws(StorageError) -> Int in
                            peak.enter()
                            usleep(200)
                            peak.leave()
                            if i % 7 == 0 { throw .invalidArgument("job \(i)") }
                            return i * 2
                        }
                        return (i, v)
                    } catch {
                        #expect(error == .invalidArgument("job \(i)"))
                        return (i, nil)
                    }
                }
            }
            var seen = Set<Int>()
            for try await (i, v) in group {
                #expect(seen.insert(i).inserted)
                #expect(v == (i % 7 == 0 ? nil : i * 2))
            }
            #expect(seen.count == 200)
        }
        #expect(peak.most <= 3, "never more threads than the limit")
        #expect(peak.most >= 2, "jobs ran side by side")
    }
}

/// How many jobs ran at once, at most.
private final class Peak: Sendable {
    private let state = Mutex((running: 0, most: 0))
    func enter() { state.withLock { $0.running += 1; $0.most = max($0.most, $0.running) } }
    func leave() { state.withLock { $0.running -= 1 } }
    var most: Int { state.withLock { $0.most } }
}
