import Foundation
import Glibc
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// Issue 9, one defect per test: a full disk, a flush that keeps failing,
/// descriptors running out, status that tells the whole story.
@Suite("Disk faults: full disks, failing flushes, descriptors")
struct DiskFaultTests {
    /// Issue 9.7: a full disk answers resourceExhausted, saying what to do;
    /// nothing of the put is stored; the next put works once space is back.
    @Test func aFullDiskRefusesPutsClearlyAndNothingIsStored() async throws {
        let f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        _ = try await t.put([image(key(1), 10)])
        f.disk.capacity = f.disk.usedBytes + 1000
        guard case .failure(let e) = await putResult(t, [image(key(2), 11)]) else {
            Issue.record("a put on a full disk succeeded")
            return
        }
        guard case .resourceExhausted(let message) = e else { Issue.record("\(e)"); return }
        #expect(message.contains("nothing of this put was stored") && message.contains("Free space"), "\(message)")
        #expect(!message.contains("/"), "no paths in the message: \(message)")
        #expect(t.status().lastRecordLsn == Lsn(10))
        f.disk.capacity = nil
        #expect(try await t.put([image(key(2), 11)]) == Lsn(11))
        await f.manager.shutdown()
    }

    /// Issue 9.7: ingest stops while there is still room to flush what is in
    /// memory, so the flush completes on the full disk and gives WAL space back.
    @Test func ingestStopsEarlyEnoughThatAFlushAlwaysCompletes() async throws {
        let f = try await DiskFixture.open(config: DiskFixture.config {
            $0.diskReserveBytes = 64 << 10
            $0.checkpointDistanceBytes = 100_000
        })
        let t = try await f.manager.create(testTenant)
        f.disk.capacity = f.disk.usedBytes + (1 << 20)
        var lsn: UInt64 = 1
        var refused: StorageError?
        while refused == nil && lsn < 400 {
            switch await putResult(t, [image(key(UInt32(lsn % 7)), lsn)]) {
            case .success: lsn += 1
            case .failure(let e): refused = e
            }
        }
        #expect(refused?.isResourceExhaustion == true, "\(String(describing: refused))")
        #expect(lsn > 20, "ingest ran until the disk was nearly full: \(lsn)")
        let before = f.disk.usedBytes
        try await t.flush()  // no space was freed: the headroom must suffice
        #expect(!t.status().layers.isEmpty && t.status().inMemoryRecords == 0)
        #expect(f.disk.usedBytes < before + (1 << 19), "the flush deleted the WAL it covered")
        _ = try await t.put([image(key(1), lsn)])
        await f.manager.shutdown()
    }

    /// Issue 9.6: a flush that keeps failing holds puts back for at most
    /// ingestStallTimeout, then refuses them; it is retried with back-off (no
    /// spinning), and once it works again puts flow and the status clears.
    @Test func aFlushThatKeepsFailingNeitherHangsPutsNorSpins() async throws {
        let config = DiskFixture.config {
            $0.checkpointDistanceBytes = 30_000
            $0.maxFrozenLayers = 2
            $0.ingestStallTimeout = .milliseconds(400)
            $0.flushRetryDelay = .milliseconds(50)
            $0.flushMaxBackoff = .milliseconds(400)
        }
        let f = try await DiskFixture.open(config: config)
        let t = try await f.manager.create(testTenant)
        try f.failpoints.configure("layer-writer-before-finish", .return)
        let tempLayersBefore = f.disk.operationCounts["create"] ?? 0
        var lsn: UInt64 = 1
        var refusal: StorageError?
        let start = ContinuousClock.now
        while refusal == nil && ContinuousClock.now - start < .seconds(20) {
            let put = ContinuousClock.now
            switch await putResult(t, [image(key(UInt32(lsn % 5)), lsn)]) {
            case .success: lsn += 1
            case .failure(let e):
                refusal = e
                #expect(ContinuousClock.now - put < .seconds(2), "the put waited \(ContinuousClock.now - put)")
            }
        }
        guard case .resourceExhausted(let message)? = refusal else { Issue.record("\(String(describing: refusal))"); return }
        #expect(message.contains("ingest is ahead of flushing"), "\(message)")
        #expect(message.contains("layer-writer-before-finish"), "\(message)")
        try await Task.sleep(for: .seconds(2))
        let attempts = (f.disk.operationCounts["create"] ?? 0) - tempLayersBefore
        #expect(attempts < 30, "\(attempts) flush attempts in ~2.5 s: the retries must back off")
        let status = t.status()
        #expect(status.flushFailures >= 2 && status.lastFlushError?.contains("layer-writer-before-finish") == true)
        try f.failpoints.configure("layer-writer-before-finish", .off)
        var resumed = false
        for _ in 0..<40 where !resumed {
            if case .success = await putResult(t, [image(key(1), lsn)]) { resumed = true } else { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(resumed)
        try await t.flush()
        #expect(t.status().flushFailures == 0 && t.status().lastFlushError == nil)
        await f.manager.shutdown()
    }

    /// Issue 9.8: a Compact whose flush fails counts as a compaction failure;
    /// the next success clears both counters and both errors.
    @Test func statusTellsTheWholeStory() async throws {
        let f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        _ = try await t.put([image(key(1), 5), image(key(2), 6)])
        try f.failpoints.configure("flush-before-index", .return)
        await #expect(throws: StorageError.failpoint("flush-before-index")) { _ = try await t.compact() }
        var s = t.status()
        #expect(s.compactionFailures == 1 && s.lastCompactionError?.contains("flush-before-index") == true)
        #expect(s.flushFailures == 1 && s.lastFlushError?.contains("flush-before-index") == true)
        try f.failpoints.configure("flush-before-index", .off)
        _ = try await t.compact(forceImageLayers: true)
        s = t.status()
        #expect(s.compactionFailures == 0 && s.lastCompactionError == nil)
        #expect(s.flushFailures == 0 && s.lastFlushError == nil)
        await f.manager.shutdown()
    }

    /// Issue 9.4: descriptors running out is a retryable error, never a stop:
    /// a WAL roll, a reset and a create under EMFILE.
    /// A close (a shutdown, a detach) that comes during a reset's reload
    /// wins: the reset says the tenant stopped, never "reset" a tenant that
    /// no longer serves.
    @Test func aResetOvertakenByACloseSaysTheTenantStopped() async throws {
        let f = try await TenantFixture.make(label: "reset-closed")
        let t = f.tenant
        _ = try await t.put([image(key(1), 10)])
        try await t.flush()
        try f.failpoints.configure("no-descriptors", .sleep(milliseconds: 200))  // each open of the reload is slow
        let reset = Task { try await t.reset(dropCache: false) }
        try await Task.sleep(for: .milliseconds(100))
        await t.close()
        await #expect { _ = try await reset.value } throws: { "\($0)".contains("stopped") }
        #expect(t.lifecycle == .stopped)
        try f.failpoints.configure("no-descriptors", .off)
        await f.manager.shutdown()
    }

    @Test func runningOutOfDescriptorsIsRetryable() async throws {
        let f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        _ = try await t.put([image(key(1), 10)])
        try await t.flush()  // the next put rolls to a new segment
        // At the limit even after the roll closes the old segment.
        f.disk.maxOpenFiles = f.disk.openDescriptors - 1
        guard case .failure(let rollError) = await putResult(t, [image(key(1), 11)]) else {
            Issue.record("a roll without descriptors succeeded")
            return
        }
        #expect(rollError.isResourceExhaustion, "\(rollError)")
        await #expect { _ = try await t.reset(dropCache: false) } throws: { ($0 as? StorageError)?.isResourceExhaustion == true }
        #expect(t.lifecycle == .active, "a reset that could not reload leaves the tenant serving")
        #expect(try await t.getPage(key: key(1), lsn: Lsn(10)).page == page(UInt64(1) << 32 | 10))
        let other = try TenantId(parsing: "000000000000000000000000000000aa")
        await #expect { _ = try await f.manager.create(other) } throws: { ($0 as? StorageError)?.isResourceExhaustion == true }
        f.disk.maxOpenFiles = nil
        let entries = try f.disk.list("tenants").sorted()
        #expect(entries == [testTenant.description], "no half-created tenant is left: \(entries)")
        _ = try await f.manager.create(other)
        #expect(try await t.put([image(key(1), 11)]) == Lsn(11))
        _ = try await t.reset(dropCache: false)
        #expect(try await t.getPage(key: key(1), lsn: Lsn(11)).page == page(UInt64(1) << 32 | 11))
        await f.manager.shutdown()
    }

    /// Issue 9.4: a tenant with many layers holds at most maxOpenLayerFiles
    /// descriptors for them; a reopened file keeps its page-cache id.
    @Test func openLayerFilesAreBounded() async throws {
        let f = try await DiskFixture.open(config: DiskFixture.config { $0.maxOpenLayerFiles = 4 }, cacheSlots: 1024)
        let t = try await f.manager.create(testTenant)
        for lsn in 1...40 as ClosedRange<UInt64> {
            _ = try await t.put([image(key(UInt32(lsn)), lsn)])
            try await t.flush()
        }
        #expect(t.status().layers.count == 40)
        #expect(f.manager.storage.openFiles.stats.open <= 4)
        // Tenants dir, tenant dir, WAL dir, WAL segment, and the layer slots.
        #expect(f.disk.openDescriptors <= 4 + 4, "\(f.disk.openDescriptors) descriptors open")
        let cold = f.cache.stats
        for lsn in 1...40 as ClosedRange<UInt64> {
            #expect(try await t.getPage(key: key(UInt32(lsn)), lsn: Lsn(40)).page == page(UInt64(lsn) << 32 | lsn))
        }
        let warm = f.cache.stats
        #expect(warm.misses > cold.misses)
        #expect(f.manager.storage.openFiles.stats.opens > 40, "descriptors were evicted and reopened")
        for lsn in 1...40 as ClosedRange<UInt64> { _ = try await t.getPage(key: key(UInt32(lsn)), lsn: Lsn(40)) }
        #expect(f.cache.stats.misses == warm.misses, "reopened files keep their cache ids: all hits")
        await f.manager.shutdown()
    }

    /// With every slot busy a read opens a descriptor of its own: those are
    /// bounded too (`maxLooseLayerFiles`), so that sixteen readers over two
    /// slots stay within a descriptor table sized for slots plus loose ones.
    @Test(arguments: [2, 1])
    func readsOwnDescriptorsAreBoundedToo(loose: Int) async throws {
        let f = try await DiskFixture.open(config: DiskFixture.config {
            $0.maxOpenLayerFiles = 2
            $0.maxLooseLayerFiles = loose
        }, cacheSlots: 4)
        let t = try await f.manager.create(testTenant)
        for lsn in 1...24 as ClosedRange<UInt64> {
            _ = try await t.put([image(key(UInt32(lsn)), lsn)])
            try await t.flush()
        }
        // Directories and the WAL segment, the two slots, and the loose ones: not one more.
        f.disk.maxOpenFiles = f.disk.openDescriptors - f.manager.storage.openFiles.stats.open + 2 + loose
        try await withThrowingTaskGroup(of: Void.self) { group in
            for reader in 0..<16 {
                group.addTask {
                    for i in 0..<80 {
                        let k = UInt32(1 + (reader * 7 + i * 5) % 24)
                        let got = try await t.getPage(key: key(k), lsn: Lsn(24))
                        #expect(got.page == page(UInt64(k) << 32 | UInt64(k)))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(f.manager.storage.openFiles.stats.opens > 24, "descriptors were evicted and reopened")
        f.disk.maxOpenFiles = nil
        await f.manager.shutdown()
    }

    /// Issue 9.7: compaction on a nearly full disk merges in steps that fit,
    /// says how much it needs when even one step does not, and resumes by
    /// itself once space is back.
    @Test func compactionWorksInStepsThatFitTheFreeSpace() async throws {
        let f = try await DiskFixture.open(config: DiskFixture.config { $0.compactionThreshold = 2 })
        let t = try await f.manager.create(testTenant)
        for lsn in 1...12 as ClosedRange<UInt64> {
            _ = try await t.put([image(key(UInt32(lsn % 4)), lsn)])
            try await t.flush()
        }
        let l0Size = t.status().layers[0].size
        // Room for a step of three L0 layers, by the most their merge may write, and not four.
        f.disk.capacity = f.disk.usedBytes + CompactionPlan.mergeBound(3 * l0Size, targetBytes: TenantConfig().targetFileBytes) + l0Size / 2
        let r = try await t.compact()
        // One step could not hold all twelve: at least three steps ran. No
        // image set at the newest LSN is written under pressure (it would
        // pin space that GC cannot give back).
        #expect(r.layersRemoved == 12 && r.layersCreated >= 3, "\(r)")
        #expect(t.status().layers.allSatisfy { $0.lsnEnd > $0.lsnStart || $0.isImage })
        for lsn in 13...18 as ClosedRange<UInt64> {
            f.disk.capacity = nil
            _ = try await t.put([image(key(UInt32(lsn % 4)), lsn)])
            try await t.flush()
        }
        f.disk.capacity = f.disk.usedBytes + l0Size  // not even two L0 layers fit
        await #expect { _ = try await t.compact() } throws: { error in
            guard case .resourceExhausted(let m) = error as? StorageError else { return false }
            return m.contains("compaction needs")
        }
        #expect(t.status().compactionFailures == 1)
        f.disk.capacity = nil
        _ = try await t.compact()
        #expect(t.status().compactionFailures == 0)
        for lsn in 1...18 as ClosedRange<UInt64> {
            #expect(try await t.getPage(key: key(UInt32(lsn % 4)), lsn: Lsn(lsn)).page == page(UInt64(lsn % 4) << 32 | lsn))
        }
        await f.manager.shutdown()
    }

    /// An image set the room cannot hold is stopped as it writes, and what it
    /// wrote is removed. The next compaction does not write it again into the
    /// same room (found by an adversarial run: every compaction wrote to the
    /// line and removed it): it waits, saying how much at least, for room
    /// that the stopped attempt showed it needs; with that room it is written.
    @Test func anImageSetStoppedForRoomWaitsForTheRoomItNeeds() async throws {
        let f = try await DiskFixture.open(config: DiskFixture.config { $0.compactionThreshold = 1_000 })
        let t = try await f.manager.create(testTenant)
        var lsn: UInt64 = 0
        for _ in 0..<2 {
            for k in 0..<300 as Range<UInt32> {
                lsn += 1
                _ = try await t.put([delta(key(k), lsn, offset: 0, bytes: [UInt8(truncatingIfNeeded: lsn)], willInit: true)])
            }
            try await t.flush()
        }
        f.disk.capacity = f.disk.usedBytes + (1 << 20)  // the 300 images take 2.4 MB
        await #expect { _ = try await t.compact(forceImageLayers: true) } throws: { error in
            guard case .resourceExhausted(let m) = error as? StorageError else { return false }
            return m.contains("compaction stopped writing image layers")
        }
        #expect(t.status().layers.allSatisfy { !$0.isImage }, "what it wrote is removed")
        let writes = f.disk.operationCounts["write"] ?? 0
        await #expect { _ = try await t.compact(forceImageLayers: true) } throws: { error in
            guard case .resourceExhausted(let m) = error as? StorageError else { return false }
            return m.contains("image layers need at least") && m.contains("an earlier attempt stopped there")
        }
        #expect(f.disk.operationCounts["write"] ?? 0 == writes, "the second attempt wrote nothing")
        f.disk.capacity = nil
        let r = try await t.compact(forceImageLayers: true)
        #expect(r.layersCreated >= 1 && t.status().layers.contains { $0.isImage }, "\(r)")
        #expect(t.state.withLock { $0.compaction.imagesNeedAtLeast } == 0)
        for k in [0, 150, 299] as [UInt32] {
            #expect(try await t.getPage(key: key(k), lsn: Lsn(lsn)).page[0] == UInt8(truncatingIfNeeded: 300 + UInt64(k) + 1))
        }
        await f.manager.shutdown()
    }

    /// A disk filled by the tenant's own history never wedges ingest for
    /// good. Here the history sits below an image set written at the newest
    /// LSN, above the GC cutoff: GC cannot use it until ingest moves the
    /// cutoff past it, and ingest is refused for space. Compaction under that
    /// pressure writes images at the cutoff instead, GC gives the space back,
    /// and ingest goes on.
    @Test func aDiskFullOfHistoryIsCompactedBackIntoUse() async throws {
        let config = DiskFixture.config {
            $0.checkpointDistanceBytes = 1 << 20
            $0.diskReserveBytes = 1 << 20
            $0.gcHorizonLsn = 1 << 20           // 128 records at an LSN step of 8192
            $0.compactionThreshold = 1000       // history stays in L0 layers
            $0.imageCreationThreshold = 2
            $0.ingestStallTimeout = .milliseconds(500)
            $0.compactionPeriod = .seconds(3600)  // only ingest refusals wake it
        }
        let keys: UInt64 = 50
        let f = try await DiskFixture.open(SimulatedDisk(capacity: 24 << 20), config: config)
        let t = try await f.manager.create(testTenant)
        var n: UInt64 = 1
        func put() async -> Bool {
            let batch = (n..<n + 16).map { image(key(UInt32($0 % keys)), $0 * 8192, seed: $0) }
            guard case .success = await putResult(t, batch) else { return false }
            n += 16
            return true
        }
        // History fills the disk; then images at the newest LSN, right below
        // the fill line, so ingest stops again before the cutoff reaches them.
        for _ in 0..<400 where await put() {}
        _ = try await t.runCompaction(explicit: false, forceImages: true)
        var refused = false
        for _ in 0..<200 where !refused { refused = !(await put()) }
        #expect(refused, "the disk filled up")
        let wedgedAt = n
        // Each refusal wakes a compaction (at most one per 2 s): ingest goes on.
        var done = 0
        let deadline = ContinuousClock.now + .seconds(60)
        while done < 60 && ContinuousClock.now < deadline {
            if await put() { done += 1 } else { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(done == 60, "ingest resumed: \(done) of 60 puts after the disk filled")
        #expect(n > wedgedAt)
        #expect(t.lifecycle == .active)
        for b in 0..<keys {
            var last = n - 1
            while last % keys != b { last -= 1 }
            #expect(try await t.getPage(key: key(UInt32(b)), lsn: nil).page == page(last), "block \(b)")
        }
        await f.manager.shutdown()
    }

    /// Issue 9.10: a reset waits for a running compaction to stop; the
    /// compaction is not counted as failed and leaves nothing behind.
    @Test func resetWaitsForARunningCompaction() async throws {
        let f = try await DiskFixture.open(config: DiskFixture.config { $0.targetFileBytes = 20_000 })
        let t = try await f.manager.create(testTenant)
        for lsn in 1...20 as ClosedRange<UInt64> {
            _ = try await t.put([image(key(UInt32(lsn % 6)), lsn)])
            if lsn % 4 == 0 { try await t.flush() }
        }
        try f.failpoints.configure("compaction-after-first-output", .pause)
        let compaction = Task { try await t.compact() }
        while f.disk.files("").isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(100))  // the first output is published; the compaction is paused
        let reset = Task { try await t.reset(dropCache: false) }
        try await Task.sleep(for: .milliseconds(100))
        try f.failpoints.configure("compaction-after-first-output", .off)
        let r = try await reset.value
        _ = await compaction.result
        #expect(r.generation == 2)
        #expect(t.status().compactionFailures == 0, "\(t.status().lastCompactionError ?? "")")
        #expect(try await unlistedFilesWhenIdle(t, disk: f.disk).isEmpty)
        _ = try await t.compact()
        await f.manager.shutdown()
    }
}

extension SimulatedDisk {
    /// Layer files (published or temp) in the test tenant's directory.
    func files(_ suffix: String) -> [String] {
        ((try? list("tenants/\(testTenant)")) ?? []).filter { $0.contains("__") || $0.hasPrefix("layer-") }
    }
}

/// Files in a tenant directory on a simulated disk that its index does not list.
func unlistedFilesWhenIdle(_ t: Tenant, disk: SimulatedDisk) async throws -> Set<String> {
    await t.compactionLock.lock()
    await t.maintenance.lock()
    defer {
        t.maintenance.unlock()
        t.compactionLock.unlock()
    }
    let listed = Set(t.state.withLock { $0.index.layers.map(\.name) })
    return Set(try disk.list(t.directory)).subtracting([IndexFile.fileName, "wal"]).subtracting(listed)
}
