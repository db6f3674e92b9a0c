import Foundation
import Synchronization
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

@Suite("Tenant: ingest, reads, waits, reset")
struct TenantTests {
    @Test func putThenGetAcrossMemoryAndLayers() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        #expect(try await t.put([image(key(1), 10), delta(key(1), 11, offset: 0, bytes: [0xAA])]) == Lsn(11))
        var expected = page(UInt64(1) << 32 | 10)
        #expect(try await t.getPage(key: key(1), lsn: Lsn(10)).page == expected)
        expected[0] = 0xAA
        #expect(try await t.getPage(key: key(1), lsn: Lsn(11)).page == expected)
        try await t.flush()
        #expect(t.status().layers.count == 1 && t.status().diskConsistentLsn == Lsn(11))
        _ = try await t.put([delta(key(1), 12, offset: 1, bytes: [0xBB])])
        expected[1] = 0xBB
        let latest = try await t.getPage(key: key(1), lsn: nil)
        #expect(latest.page == expected && latest.lsn == Lsn(12))
        await #expect(throws: StorageError.pageNotFound(testTenant, key(2), Lsn(12))) {
            _ = try await t.getPage(key: key(2), lsn: Lsn(12))
        }
        await #expect(throws: StorageError.pageNotFound(testTenant, key(1), Lsn(9))) {
            _ = try await t.getPage(key: key(1), lsn: Lsn(9))
        }
        await f.manager.shutdown()
    }

    /// The read the server answers on its event loop: pages from memory,
    /// cached blocks and blocks the OS page cache holds; nil when the disk or
    /// a wait would be needed.
    @Test func getPageWithoutWaitingNeverWaitsForTheDisk() async throws {
        let f = try await TenantFixture.make(cacheSlots: 64)
        let t = f.tenant
        _ = try await t.put([image(key(1), 10), image(key(2), 10)])
        #expect(try t.getPageWithoutWaiting(key: key(1), lsn: Lsn(10))?.page == page(UInt64(1) << 32 | 10))  // in memory
        #expect(try t.getPageWithoutWaiting(key: key(1), lsn: Lsn(11)) == nil)                             // would wait
        try await t.flush()
        _ = try await t.reset(dropCache: true)                                                              // nothing cached
        let layers = try layerFiles(f.tenantDir)
        #expect(!layers.isEmpty)
        guard layers.allSatisfy({ dropFromOsCache($0) }) else {
            print("skip: the OS keeps \(f.tenantDir)'s pages in memory whatever it is told (tmpfs?): only the disk-free half is checked")
            await f.manager.shutdown()
            return
        }
        let before = f.cache.stats
        #expect(try t.getPageWithoutWaiting(key: key(1), lsn: Lsn(10)) == nil)  // only the disk has it
        #expect(f.cache.stats.misses == before.misses)  // counted by the read that waits for it, not here
        for path in layers { _ = try Data(contentsOf: URL(fileURLWithPath: path)) }  // now the OS page cache has it
        #expect(try t.getPageWithoutWaiting(key: key(1), lsn: Lsn(10))?.page == page(UInt64(1) << 32 | 10))
        #expect(f.cache.stats.misses > before.misses)  // copied in from the OS: misses of this cache
        let loaded = f.cache.stats
        #expect(try t.getPageWithoutWaiting(key: key(1), lsn: Lsn(10))?.page == page(UInt64(1) << 32 | 10))
        #expect(f.cache.stats.misses == loaded.misses && f.cache.stats.hits > loaded.hits)  // and cached now
        _ = try await t.reset(dropCache: true)
        #expect(layers.allSatisfy({ dropFromOsCache($0) }))
        #expect(try await t.getPage(key: key(2), lsn: Lsn(10)).page == page(UInt64(2) << 32 | 10))        // waits for the disk
        #expect(throws: StorageError.pageNotFound(testTenant, key(9), Lsn(10))) { try t.getPageWithoutWaiting(key: key(9), lsn: Lsn(10)) }
        await f.manager.shutdown()
    }

    /// A value whose first block is cached and whose second is only in the OS
    /// page cache: each block is counted once, the second as a miss filled from the OS.
    @Test func aHalfCachedValueCountsEachBlockOnce() async throws {
        let f = try await TenantFixture.make(cacheSlots: 64)
        let t = f.tenant
        // Key 1's image in block 1, its small delta at the start of block 2, and key 2's image
        // packed after it in blocks 2–3 (aligning it would take nearly a block of padding).
        let patch = delta(key(1), 11, offset: 100, bytes: [1, 2, 3])
        _ = try await t.put([image(key(1), 10), image(key(2), 10)])
        _ = try await t.put([patch])
        try await t.flush()
        _ = try await t.reset(dropCache: true)
        var expected = page(UInt64(1) << 32 | 10)
        expected.replaceSubrange(100..<103, with: [1, 2, 3])
        #expect(try await t.getPage(key: key(1), lsn: Lsn(11)).page == expected)  // caches its index block, blocks 1 and 2
        for path in try layerFiles(f.tenantDir) { _ = try Data(contentsOf: URL(fileURLWithPath: path)) }
        let before = f.cache.stats
        #expect(try t.getPageWithoutWaiting(key: key(2), lsn: Lsn(10))?.page == page(UInt64(2) << 32 | 10))
        let after = f.cache.stats
        #expect(after.hits - before.hits == 2)  // the index block and block 2
        #expect(after.misses - before.misses == 1 && after.fromOsCache - before.fromOsCache == 1)  // block 3
        await f.manager.shutdown()
    }

    private func layerFiles(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { LayerName(parsing: $0) != nil }.map { dir + "/" + $0 }
    }

    /// Invariant 7 (storage side): every bad batch is rejected whole and stores nothing.
    @Test func badBatchesAreRejectedWholeAndStoreNothing() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        _ = try await t.put([image(key(1), 10)])
        let bad: [[Record]] = [
            [],
            [image(key(2), 11), Record(key: key(3), lsn: Lsn(12), value: .image([1, 2]))],
            [image(key(2), 12), image(key(3), 11)],                    // LSN order
            [image(key(2), 12), image(key(2), 12)],                    // (key, lsn) twice
            [image(key(2), 10)],                                       // not above last_record_lsn
            [image(key(2), 11), delta(key(2), 12, offset: 8000, bytes: [UInt8](repeating: 1, count: 500))],
            [image(key(2), 11), Record(key: key(2), lsn: Lsn(12), value: .delta(Delta(willInit: false, patches: [])))],
        ]
        for batch in bad {
            await #expect(throws: StorageError.self) { _ = try await t.put(batch) }
        }
        #expect(t.status().lastRecordLsn == Lsn(10))
        await #expect(throws: StorageError.self) { _ = try await t.getPage(key: key(2), lsn: Lsn(10)) }
        // Same LSN for different keys in one batch is fine.
        #expect(try await t.put([image(key(2), 11), image(key(3), 11)]) == Lsn(11))
        await f.manager.shutdown()
    }

    /// Invariant 6: concurrent puts share fsyncs (group commit), and each is
    /// acknowledged only once durable.
    @Test func invariant6_concurrentPutsShareFsyncs() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        // A slow disk (each fsync 20 ms) so puts surely queue behind one in flight.
        try f.failpoints.configure("wal-before-fsync", .sleep(milliseconds: 20))
        let puts = 400
        let lsns = LsnCounter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<puts {
                group.addTask {
                    // A put that loses the race for LSN order takes a new LSN and retries.
                    while true {
                        do {
                            _ = try await t.put([image(key(UInt32(i)), lsns.next())])
                            return
                        } catch StorageError.invalidArgument {
                            continue
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let syncs = t.state.withLock { $0.wal }!.syncCount.load(ordering: .relaxed)
        // Without group commit this is exactly `puts`; loaded CI machines batch less, so leave room.
        #expect(syncs <= puts / 4, "puts did not share fsyncs: \(syncs) for \(puts)")
        #expect(t.status().inMemoryRecords == puts)
        await f.manager.shutdown()
    }

    /// Invariant 6: an fsync error stops the process instead of acknowledging
    /// (a retried fsync can report success for data the kernel dropped).
    @Test func invariant6_anFsyncErrorStopsTheProcess() async {
        await #expect(processExitsWith: .signal(SIGABRT)) {
            let f = try await TenantFixture.make(label: "exit-fsync-error")
            try f.failpoints.configure("wal-fsync-error", .return)
            _ = try await f.tenant.put([image(key(1), 10)])
        }
        TemporaryDirectory.removeAll(label: "exit-fsync-error")
    }

    @Test func invariant6_aFailedWalWriteStoresNothingAndTheNextPutWorks() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        _ = try await t.put([image(key(1), 10)])
        try f.failpoints.configure("wal-before-fsync", .return)
        await #expect(throws: StorageError.failpoint("wal-before-fsync")) { _ = try await t.put([image(key(1), 20)]) }
        try f.failpoints.configure("wal-before-fsync", .off)
        #expect(t.status().lastRecordLsn == Lsn(10))
        // The failed LSN can be written again, and a restart replays only what was acknowledged.
        _ = try await t.put([image(key(1), 20, seed: 77)])
        let (m2, t2) = try await f.reopen()
        #expect(try await t2.getPage(key: key(1), lsn: Lsn(20)).page == page(77))
        #expect(t2.status().lastRecordLsn == Lsn(20))
        await m2.shutdown()
    }

    @Test func walTornTailIsCutAndMiddleCorruptionBreaksTheTenant() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 10)])
        _ = try await f.tenant.put([image(key(1), 11)])
        await f.manager.shutdown()
        let walDir = f.tenantDir + "/wal"
        let seg = walDir + "/" + f.dir.files("tenants/\(testTenant)/wal")[0]
        let good = try Data(contentsOf: URL(fileURLWithPath: seg))
        // The frames: header, two commits, the seal (then the padding of a direct write).
        let frames = walFrames([UInt8](good))
        try #require(frames.count == 4)
        // Torn: half of the last record.
        let torn = frames[2].lowerBound + frames[2].count / 2
        try good.prefix(torn).write(to: URL(fileURLWithPath: seg))
        var (m, t) = try await f.reopen()
        #expect(t.status().lastRecordLsn == Lsn(10), "\(t.lifecycle)")
        #expect(Directory.fileSize(seg)! < torn)
        await m.shutdown()
        // Torn: zeros after the last good record.
        try (good + Data(count: 4096)).write(to: URL(fileURLWithPath: seg))
        (m, t) = try await f.reopen()
        #expect(t.status().lastRecordLsn == Lsn(11))
        await m.shutdown()
        // A bad byte in the first record, with a good one after it: broken.
        var bad = good
        bad[100] ^= 0xFF
        try bad.write(to: URL(fileURLWithPath: seg))
        (m, t) = try await f.reopen()
        guard case .broken(let reason) = t.lifecycle else {
            Issue.record("expected broken, got \(t.lifecycle)")
            return
        }
        #expect(reason.contains("WAL segment " + URL(fileURLWithPath: seg).lastPathComponent))
        await m.shutdown()
    }

    @Test func checkpointDistanceFlushesInTheBackgroundAndTruncatesTheWal() async throws {
        let f = try await TenantFixture.make(checkpointBytes: 100_000)
        let t = f.tenant
        var model = PageModel()
        for lsn in 1...60 as ClosedRange<UInt64> {
            let r = [image(key(UInt32(lsn % 7)), lsn)]
            model.apply(r)
            _ = try await t.put(r)
        }
        try await waitUntil { t.status().layers.count >= 4 && t.status().inMemoryRecords < 13 }
        #expect(t.status().diskConsistentLsn > Lsn(40))
        try await waitUntil { t.state.withLock { $0.wal }!.segmentCount <= 2 }
        for lsn in stride(from: UInt64(1), through: 60, by: 3) {
            for b in 0..<7 as Range<UInt32> {
                let want = model.page(key(b), at: Lsn(lsn))
                let got = try? await t.getPage(key: key(b), lsn: Lsn(lsn)).page
                #expect(got == want)
            }
        }
        await f.manager.shutdown()
    }

    @Test func getPageWaitsForIngestThenTimesOut() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        _ = try await t.put([image(key(1), 10)])
        async let waited = t.getPage(key: key(1), lsn: Lsn(20), waitTimeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(50))
        _ = try await t.put([image(key(1), 20, seed: 5)])
        let r = try await waited
        #expect(r.page == page(5) && r.lsn == Lsn(20))
        let start = ContinuousClock.now
        await #expect(throws: StorageError.lsnNotAvailable(testTenant, requested: Lsn(30), lastRecordLsn: Lsn(20))) {
            _ = try await t.getPage(key: key(1), lsn: Lsn(30), waitTimeout: .milliseconds(100))
        }
        #expect(ContinuousClock.now - start >= .milliseconds(90))
        await f.manager.shutdown()
    }

    /// Reset while readers run: every answer is the right page or tenantUnavailable.
    @Test func resetDuringReadsNeverServesWrongBytes() async throws {
        let f = try await TenantFixture.make(checkpointBytes: 50_000, cacheSlots: 64)
        let t = f.tenant
        var model = PageModel()
        for lsn in 1...40 as ClosedRange<UInt64> {
            let r = [image(key(UInt32(lsn % 5)), lsn)]
            model.apply(r)
            _ = try await t.put(r)
        }
        try await t.flush()
        let frozenModel = model
        let stop = LoadCounter(), served = LoadCounter(), unavailable = LoadCounter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for r in 0..<4 {
                group.addTask {
                    var rng = SeededRandom(seed: UInt64(r))
                    while stop.count.load(ordering: .relaxed) == 0 {
                        let b = UInt32.random(in: 0..<5, using: &rng), lsn = UInt64.random(in: 1...40, using: &rng)
                        do {
                            let got = try await t.getPage(key: key(b), lsn: Lsn(lsn)).page
                            #expect(got == frozenModel.page(key(b), at: Lsn(lsn)))
                            served.count.add(1, ordering: .relaxed)
                        } catch StorageError.tenantUnavailable {
                            unavailable.count.add(1, ordering: .relaxed)
                        } catch StorageError.pageNotFound {
                            #expect(frozenModel.page(key(b), at: Lsn(lsn)) == nil)
                        }
                        await Task.yield()  // cache hits never suspend: let the resetter run
                    }
                }
            }
            for i in 0..<20 {
                let r = try await t.reset(dropCache: i % 2 == 0)
                #expect(r.filesSwept == 0)
                try await Task.sleep(for: .milliseconds(5))
            }
            stop.count.store(1, ordering: .relaxed)
            try await group.waitForAll()
        }
        #expect(served.count.load(ordering: .relaxed) > 0)
        await f.manager.shutdown()
    }

    /// A failing disk: a failpoint `return` in the middle of a layer write
    /// leaves no file behind, the tenant keeps serving, and the flush succeeds later.
    @Test func failingDiskMidLayerWriteLeavesNoFileAndKeepsServing() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        for lsn in 1...20 as ClosedRange<UInt64> { _ = try await t.put([image(key(UInt32(lsn)), lsn)]) }
        try f.failpoints.configure("layer-writer-put-value", .return)
        await #expect(throws: StorageError.failpoint("layer-writer-put-value")) { try await t.flush() }
        #expect(f.layerFiles().isEmpty)
        #expect(t.status().state == .active)
        #expect(try await t.getPage(key: key(7), lsn: Lsn(20)).page == page(UInt64(7) << 32 | 7))
        _ = try await t.put([image(key(1), 21)])
        try f.failpoints.configure("layer-writer-put-value", .off)
        try await t.flush()
        #expect(f.layerFiles().count == 2)  // the retried frozen layer, then the open one
        #expect(try await t.getPage(key: key(1), lsn: Lsn(21)).page == page(UInt64(1) << 32 | 21))
        await f.manager.shutdown()
    }

    @Test func hundredsOfLayersStillReadCorrectly() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        var model = PageModel()
        for lsn in 1...300 as ClosedRange<UInt64> {
            let b = UInt32(lsn % 10)
            let r: [Record] = lsn % 10 == lsn % 20 ? [image(key(b), lsn)] : [delta(key(b), lsn, offset: Int(lsn), bytes: [UInt8(lsn & 0xFF)])]
            model.apply(r)
            _ = try await t.put(r)
            try await t.flush()
        }
        #expect(t.status().layers.count == 300)
        for b in 0..<10 as Range<UInt32> {
            for lsn in [1, 50, 151, 299, 300] as [UInt64] {
                #expect((try? await t.getPage(key: key(b), lsn: Lsn(lsn)).page) == model.page(key(b), at: Lsn(lsn)))
            }
        }
        await f.manager.shutdown()
    }
}

func waitUntil(timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

final class LsnCounter: Sendable {
    private let value = Mutex<UInt64>(0)
    func next() -> UInt64 { value.withLock { $0 += 1; return $0 } }
}
