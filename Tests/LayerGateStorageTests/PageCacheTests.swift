import Foundation
import Synchronization
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// Reads block `b` of fake file `f` through the cache; the bytes say which block.
@discardableResult
func touch(_ cache: PageCache, file f: UInt64, block b: UInt64, loads: LoadCounter? = nil) throws(StorageError) -> UInt64 {
    try cache.withBlock(
        file: f, block: b,
        load: { buf throws(StorageError) in
            loads?.count.add(1, ordering: .relaxed)
            buf.storeBytes(of: f, toByteOffset: 0, as: UInt64.self)
            buf.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
        },
        body: { buf throws(StorageError) -> UInt64 in
            #expect(buf.load(fromByteOffset: 0, as: UInt64.self) == f)
            return buf.load(fromByteOffset: 8, as: UInt64.self)
        })
}

final class LoadCounter: Sendable {
    let count = Atomic<Int>(0)
}

@Suite("Page cache")
struct PageCacheTests {
    @Test func hitsMissesAndEvictionsAreCounted() throws {
        let cache = PageCache(capacity: 4)
        for b in 0..<4 as Range<UInt64> { try touch(cache, file: 1, block: b) }
        for b in 0..<4 as Range<UInt64> { try touch(cache, file: 1, block: b) }
        var s = cache.stats
        #expect(s.misses == 4 && s.hits == 4 && s.evictions == 0 && s.used == 4)
        try touch(cache, file: 1, block: 99)
        s = cache.stats
        #expect(s.misses == 5 && s.evictions == 1 && s.used == 4)
    }

    /// A run copied from the OS page cache counts its blocks that were not
    /// cached as misses filled from the OS, and no more (they are a part of the misses).
    @Test func aRunFromTheOsCacheCountsOnlyItsMisses() throws {
        let cache = PageCache(capacity: 8)
        try touch(cache, file: 1, block: 1)  // the run's last block is cached already
        let before = cache.stats
        try cache.withRun(file: 1, blocks: 0..<2, source: .osCache, load: { (_: UnsafeMutableRawBufferPointer) throws(StorageError) in },
                          body: { (_: UnsafeRawBufferPointer) throws(StorageError) in })
        var s = cache.stats
        #expect(s.misses == before.misses + 1 && s.hits == before.hits + 1 && s.fromOsCache == 1)
        try cache.withRun(file: 1, blocks: 2..<4, load: { (_: UnsafeMutableRawBufferPointer) throws(StorageError) in },
                          body: { (_: UnsafeRawBufferPointer) throws(StorageError) in })
        s = cache.stats
        #expect(s.misses == before.misses + 3 && s.fromOsCache == 1)  // read from the disk
        #expect(s.fromOsCache <= s.misses)
    }

    /// Invariant 5: a file id is new at every open, so a reopened (or
    /// replaced) file can never be served another file's cached blocks.
    @Test func invariant5_fileIdsAreNeverReused() throws {
        let dir = TempDir()
        let cache = PageCache(capacity: 16)
        let d = try writeLayer(dir.path, [image(key(1), 5)])
        var ids = Set<UInt64>()
        for _ in 0..<50 {
            let r = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)
            #expect(ids.insert(r.fileId).inserted)
        }
        // Blocks cached under an old id are not visible under a new one.
        let a = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)
        _ = try readAll(a)
        let b = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)
        #expect(cache.contains(file: a.fileId, block: 1))
        #expect(!cache.contains(file: b.fileId, block: 1))
    }

    @Test func invariant5_closingAFileDropsItsBlocks() throws {
        let dir = TempDir()
        let cache = PageCache(capacity: 16)
        let d = try writeLayer(dir.path, [image(key(1), 5)])
        var id: UInt64 = 0
        do {
            let r = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)
            _ = try readAll(r)
            id = r.fileId
            #expect(cache.contains(file: id, block: 1))
        }
        #expect(!cache.contains(file: id, block: 1))
        #expect(cache.stats.used == 0)
    }

    /// A one-time scan of a layer far larger than the cache must not flush the hot set.
    @Test func scanDoesNotFlushTheHotSet() throws {
        let cache = PageCache(capacity: 256)
        let hot = 0..<64 as Range<UInt64>
        for _ in 0..<3 { for b in hot { try touch(cache, file: 1, block: b) } }
        for b in 0..<10_000 as Range<UInt64> { try touch(cache, file: 2, block: b) }  // the scan
        let loads = LoadCounter()
        for b in hot { try touch(cache, file: 1, block: b, loads: loads) }
        #expect(loads.count.load(ordering: .relaxed) == 0, "hot blocks were evicted by a scan")
    }

    @Test func aBlockSeenAgainAfterEvictionReturnsToMain() throws {
        // Ghost entries: a block evicted from probation and asked again is no scan.
        let cache = PageCache(capacity: 20)
        for b in 0..<40 as Range<UInt64> { try touch(cache, file: 1, block: b) }
        for b in 0..<10 as Range<UInt64> { try touch(cache, file: 1, block: b) }  // back from the ghost list
        for b in 100..<400 as Range<UInt64> { try touch(cache, file: 1, block: b) }
        let loads = LoadCounter()
        for b in 0..<10 as Range<UInt64> { try touch(cache, file: 1, block: b, loads: loads) }
        #expect(loads.count.load(ordering: .relaxed) < 10)
    }

    @Test func manyThreadsReadConsistentBytes() async throws {
        let cache = PageCache(capacity: 512)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask {
                    var rng = SeededRandom(seed: UInt64(t))
                    for _ in 0..<20_000 {
                        let f = UInt64.random(in: 1...4, using: &rng)
                        let b = UInt64.random(in: 0..<300, using: &rng)
                        let got = try touch(cache, file: f, block: b)
                        #expect(got == b)
                    }
                }
            }
            try await group.waitForAll()
        }
        let s = cache.stats
        #expect(s.hits + s.misses == 160_000)
        #expect(s.used <= 512)
    }

    @Test func allSlotsPinnedStillServesWithoutCaching() throws {
        let cache = PageCache(capacity: 1)
        let inner = try cache.withBlock(
            file: 1, block: 1, load: { buf throws(StorageError) in buf.storeBytes(of: UInt64(1), as: UInt64.self) },
            body: { _ throws(StorageError) in try touch(cache, file: 2, block: 7) })
        #expect(inner == 7)
        #expect(!cache.contains(file: 2, block: 7))
    }
}

@Suite("Block table")
struct BlockTableTests {
    /// Random inserts and removals with heavy collisions agree with Dictionary.
    @Test func matchesDictionaryUnderChurn() {
        var rng = SeededRandom(seed: 99)
        var table = BlockTable(capacity: 64)
        var model: [BlockKey: Int] = [:]
        for step in 0..<200_000 {
            let k = BlockKey(file: UInt64.random(in: 1...3, using: &rng), block: UInt64.random(in: 0..<60, using: &rng))
            if Bool.random(using: &rng), model.count < 64 || model[k] != nil {
                table[k] = step
                model[k] = step
            } else {
                table[k] = nil
                model[k] = nil
            }
            #expect(table.count == model.count)
        }
        for f in 1...3 as ClosedRange<UInt64> {
            for b in 0..<60 as Range<UInt64> {
                let k = BlockKey(file: f, block: b)
                #expect(table[k] == model[k])
            }
        }
    }
}
