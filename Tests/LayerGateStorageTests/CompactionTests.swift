import Foundation
import Synchronization
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// Ingests `count` single-record puts over `keys` keys, flushing every `flushEvery`.
@discardableResult
func ingest(_ t: Tenant, _ model: inout PageModel, from first: UInt64, count: Int, keys: UInt32 = 30, flushEvery: Int = 20,
            seed: UInt64 = 1) async throws -> UInt64 {
    var rng = SeededRandom(seed: seed &+ first)
    var lsn = first
    for i in 0..<count {
        let k = key(UInt32.random(in: 0..<keys, using: &rng))
        let r: Record = model.history[k] == nil || Int.random(in: 0..<6, using: &rng) == 0
            ? image(k, lsn, seed: rng.next())
            : delta(k, lsn, offset: Int.random(in: 0..<8000, using: &rng), bytes: [UInt8.random(in: 0...255, using: &rng), 7])
        model.apply([r])
        _ = try await t.put([r])
        if (i + 1) % flushEvery == 0 { try await t.flush() }
        lsn += 1
    }
    return lsn
}

func expectPagesMatch(_ t: Tenant, _ model: PageModel, lsns: [UInt64], keys: UInt32 = 30, _ comment: Comment? = nil) async {
    for lsn in lsns {
        for b in 0..<keys {
            let want = model.page(key(b), at: Lsn(lsn))
            switch await readResult(t, key(b), Lsn(lsn)) {
            case .success(let got): #expect(got == want, "\(key(b)) at \(lsn) \(comment?.rawValue ?? "")")
            case .failure(.pageNotFound): #expect(want == nil, "\(key(b)) at \(lsn) missing \(comment?.rawValue ?? "")")
            case .failure(let e): Issue.record("\(key(b)) at \(lsn): \(e) \(comment?.rawValue ?? "")")
            }
        }
    }
}

/// Unlisted files once no flush or compaction is running (they hold these locks while writing).
func unlistedFilesWhenIdle(_ t: Tenant) async throws -> Set<String> {
    await t.compactionLock.lock()
    await t.maintenance.lock()
    defer {
        t.maintenance.unlock()
        t.compactionLock.unlock()
    }
    return try unlistedFiles(t)
}

/// Files in the tenant directory that the index does not list (temp files included).
func unlistedFiles(_ t: Tenant) throws -> Set<String> {
    let listed = try IndexFile.read(directory: t.path).layerNames
    return Set(try Directory.list(t.path)).subtracting([IndexFile.fileName, "wal"]).subtracting(listed)
}

@Suite("Compaction plan (pure)")
struct CompactionPlanTests {
    func layer(_ kind: LayerName.Kind, _ s: UInt64, _ e: UInt64, level: Int) -> CompactionPlan.Layer {
        CompactionPlan.Layer(name: LayerName(kind: kind, keys: KeyRange(first: key(0), last: key(9)), lsnStart: Lsn(s),
                                             lsnEnd: Lsn(e), generation: 1), level: level)
    }

    @Test func l0MergeWaitsForTheThreshold() {
        let l0s: [CompactionPlan.Layer] = (0..<4 as Range<UInt64>).map { (i: UInt64) -> CompactionPlan.Layer in
            layer(.delta, i * 10 + 1, i * 10 + 10, level: 0)
        }
        #expect(CompactionPlan.l0ToMerge(l0s, threshold: 5).isEmpty)
        #expect(CompactionPlan.l0ToMerge(l0s, threshold: 4).count == 4)
        #expect(CompactionPlan.l0ToMerge(Array(l0s.prefix(1)), threshold: 0).isEmpty)  // one L0 is not worth a rewrite
        #expect(CompactionPlan.l0ToMerge(l0s + [layer(.delta, 41, 50, level: 1)], threshold: 4).count == 4)
    }

    /// A merge step is planned by what it may write, not by what it reads:
    /// three layers of 100 kB fit 300 kB of room by their sizes, but their
    /// merge may write 407 kB, so the step takes two.
    @Test func aMergeStepFitsTheRoomByWhatItMayWrite() {
        var l0s: [CompactionPlan.Layer] = (0..<4 as Range<UInt64>).map { (i: UInt64) -> CompactionPlan.Layer in
            layer(.delta, i * 10 + 1, i * 10 + 10, level: 0)
        }
        for i in l0s.indices { l0s[i].size = 100_000 }
        let target = 128 << 20
        #expect(CompactionPlan.l0Batch(l0s, batchBytes: 1 << 30, room: 300_000, targetBytes: target).count == 2)
        #expect(CompactionPlan.l0Batch(l0s, batchBytes: 1 << 30, room: 1 << 30, targetBytes: target).count == 4)
        #expect(CompactionPlan.l0Batch(l0s, batchBytes: 250_000, room: 1 << 30, targetBytes: target).count == 2, "the batch limit")
        #expect(CompactionPlan.l0Batch(l0s, batchBytes: 1 << 30, room: 250_000, targetBytes: target).isEmpty, "not even two")
        #expect(CompactionPlan.mergeBound(200_000, targetBytes: target) == 250_000 + DiskBudget.layerFileEnd)
        #expect(CompactionPlan.mergeBound(300_000, targetBytes: 100_000) == 375_000 + 4 * DiskBudget.layerFileEnd, "an end for each output")
    }

    @Test func imagesNeedEnoughDeltasAndANewLsn() {
        let deltas = [layer(.delta, 1, 40, level: 1), layer(.delta, 41, 50, level: 0), layer(.delta, 51, 60, level: 0)]
        #expect(CompactionPlan.imageLsn(deltas, diskConsistentLsn: Lsn(60), threshold: 3, force: false) == Lsn(60))
        #expect(CompactionPlan.imageLsn(deltas, diskConsistentLsn: Lsn(60), threshold: 4, force: false) == nil)
        #expect(CompactionPlan.imageLsn(deltas, diskConsistentLsn: Lsn(60), threshold: 4, force: true) == Lsn(60))
        // Never at an LSN that already has images: that name is taken.
        let withImage = deltas + [layer(.image, 60, 60, level: 1)]
        #expect(CompactionPlan.imageLsn(withImage, diskConsistentLsn: Lsn(60), threshold: 1, force: true) == nil)
        #expect(CompactionPlan.imageLsn([], diskConsistentLsn: Lsn(0), threshold: 1, force: true) == nil)
    }

    @Test func garbageIsWhatTheNewestImageBelowTheCutoffCovers() {
        let layers = [layer(.delta, 1, 40, level: 1), layer(.image, 40, 40, level: 1), layer(.delta, 41, 60, level: 1),
                      layer(.image, 60, 60, level: 1), layer(.delta, 61, 80, level: 0)]
        var g = CompactionPlan.garbage(layers, lastRecordLsn: Lsn(80), horizon: 30, currentCutoff: .zero)
        #expect(g.cutoff == Lsn(50))
        #expect(g.remove.map(\.name.lsnEnd) == [Lsn(40)])  // only the delta that image@40 covers
        g = CompactionPlan.garbage(layers, lastRecordLsn: Lsn(80), horizon: 10, currentCutoff: .zero)
        #expect(g.cutoff == Lsn(70))
        #expect(Set(g.remove.map(\.fileName)) == Set(layers.prefix(3).map(\.fileName)))
        // The cutoff never moves back.
        g = CompactionPlan.garbage(layers, lastRecordLsn: Lsn(80), horizon: 1000, currentCutoff: Lsn(45))
        #expect(g.cutoff == Lsn(45))
    }
}

@Suite("Compaction")
struct CompactionTests {
    @Test func l0sMergeIntoL1sSplitAtTheTargetSize() async throws {
        let f = try await TenantFixture.make { $0.targetFileBytes = 60_000 }
        let t = f.tenant
        var model = PageModel()
        let end = try await ingest(t, &model, from: 1, count: 200)
        let l0Files = Set(t.status().layers.map(\.name))
        #expect(l0Files.count == 10)
        let r = try await t.compact()
        #expect(r.layersRemoved == 10 && r.layersCreated >= 3 && r.bytesWritten > 0)
        let after = t.status().layers
        #expect(Set(after.map(\.name)).isDisjoint(with: l0Files))
        // L1s: one LSN range, disjoint key ranges.
        #expect(Set(after.map { [$0.lsnStart, $0.lsnEnd] }).count == 1)
        let index = try IndexFile.read(directory: t.path)
        #expect(index.layers.allSatisfy { $0.level == 1 })
        #expect(try unlistedFiles(t).isEmpty)
        await expectPagesMatch(t, model, lsns: [1, 17, 100, 150, end - 1])
        // Nothing left to merge: a second compaction does nothing.
        #expect(try await t.compact() == CompactionResult())
        await f.manager.shutdown()
    }

    /// The stuck scenario, step by step: three outputs planned, the first
    /// finished, the second fails mid-way; the very next compaction succeeds
    /// without a reset, and pages equal the model.
    @Test func failedCompactionCleansUpSoTheNextOneSucceeds() async throws {
        let f = try await TenantFixture.make { $0.targetFileBytes = 60_000 }
        let t = f.tenant
        var model = PageModel()
        let end = try await ingest(t, &model, from: 1, count: 200)
        let before = try IndexFile.read(directory: t.path)
        try f.failpoints.configure("compaction-after-first-output", .return)
        await #expect(throws: StorageError.failpoint("compaction-after-first-output")) { _ = try await t.compact() }
        #expect(try IndexFile.read(directory: t.path).layers == before.layers)
        #expect(try unlistedFiles(t).isEmpty, "the finished first output must be deleted again")
        #expect(t.status().compactionFailures == 1)
        #expect(t.status().lastCompactionError?.contains("compaction-after-first-output") == true)
        await expectPagesMatch(t, model, lsns: [50, end - 1])
        try f.failpoints.configure("compaction-after-first-output", .off)
        let r = try await t.compact()
        #expect(r.layersCreated >= 3)
        #expect(t.status().compactionFailures == 0)
        await expectPagesMatch(t, model, lsns: [1, 50, 120, end - 1])
        await f.manager.shutdown()
    }

    /// A file with the name of a coming output (a crash leftover, not listed):
    /// compaction fails with layerExists naming it, leaves it as it is, and the
    /// next load (reset) sweeps it; then compaction succeeds.
    @Test func plantedLeftoverFailsCleanlyAndResetSweepsIt() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        var model = PageModel()
        let end = try await ingest(t, &model, from: 1, count: 100, keys: 10)
        let l0s = t.status().layers
        let keys = KeyRange(first: key(0), last: key(9))
        let coming = LayerName(kind: .delta, keys: keys, lsnStart: l0s.map(\.lsnStart).min()!, lsnEnd: l0s.map(\.lsnEnd).max()!,
                               generation: t.status().generation)
        let planted = t.path + "/" + coming.description
        let junk = Data((0..<20_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        try junk.write(to: URL(fileURLWithPath: planted))
        await #expect(throws: StorageError.layerExists(file: t.directory + "/" + coming.description)) { _ = try await t.compact() }
        #expect(try Data(contentsOf: URL(fileURLWithPath: planted)) == junk)
        #expect(try unlistedFiles(t) == [coming.description])
        let reset = try await t.reset(dropCache: false)
        #expect(reset.filesSwept == 1)
        #expect(!FileManager.default.fileExists(atPath: planted))
        let r = try await t.compact()
        #expect(r.layersCreated == 1 && r.layersRemoved == 5)
        await expectPagesMatch(t, model, lsns: [1, 33, end - 1], keys: 10)
        await f.manager.shutdown()
    }

    @Test(arguments: ["layer-writer-put-value", "layer-writer-before-finish", "after-layer-publish-before-index", "index-before-rename"])
    func everyCompactionFailpointLeavesNoFileAndTheRetryWorks(point: String) async throws {
        let f = try await TenantFixture.make { $0.targetFileBytes = 60_000 }
        let t = f.tenant
        var model = PageModel()
        let end = try await ingest(t, &model, from: 1, count: 120)
        try f.failpoints.configure(point, .return)
        await #expect(throws: StorageError.failpoint(point)) { _ = try await t.compact() }
        #expect(try unlistedFiles(t).isEmpty)
        try f.failpoints.configure(point, .off)
        _ = try await t.compact()
        await expectPagesMatch(t, model, lsns: [10, 60, end - 1])
        await f.manager.shutdown()
    }

    @Test func imageLayersAndGcKeepPagesAboveTheHorizon() async throws {
        let f = try await TenantFixture.make { $0.gcHorizonLsn = 50 }
        let t = f.tenant
        var model = PageModel()
        var lsn = try await ingest(t, &model, from: 1, count: 100)
        _ = try await t.compact(forceImageLayers: true)                  // L1 + images at 100
        let firstImages = t.status().layers.filter(\.isImage)
        #expect(!firstImages.isEmpty && firstImages.allSatisfy { $0.lsnStart == Lsn(100) })
        lsn = try await ingest(t, &model, from: lsn, count: 100, seed: 2)  // up to 200
        let r = try await t.compact(forceImageLayers: true)             // L1, images at 200, GC with cutoff 150
        let status = t.status()
        #expect(status.gcCutoffLsn == Lsn(150))
        #expect(r.layersRemoved > 5)
        // Below the horizon: only layers at or above the image at 100 remain.
        #expect(status.layers.allSatisfy { $0.isImage ? $0.lsnStart >= Lsn(100) : $0.lsnEnd >= Lsn(100) })
        #expect(try unlistedFiles(t).isEmpty)
        await expectPagesMatch(t, model, lsns: [150, 151, 175, lsn - 1])
        await #expect(throws: StorageError.lsnBelowGcHorizon(testTenant, requested: Lsn(149), cutoff: Lsn(150))) {
            _ = try await t.getPage(key: key(1), lsn: Lsn(149))
        }
        // It survives a restart as it is.
        let (m2, t2) = try await f.reopen()
        await expectPagesMatch(t2, model, lsns: [150, lsn - 1])
        await m2.shutdown()
    }

    /// A removed layer's file stays while an in-flight read holds it.
    @Test func gcNeverDeletesAFileAnInFlightReadHolds() async throws {
        let f = try await TenantFixture.make { $0.gcHorizonLsn = 10 }
        let t = f.tenant
        var model = PageModel()
        var lsn = try await ingest(t, &model, from: 1, count: 60)
        _ = try await t.compact(forceImageLayers: true)
        let held: LayerReader = t.state.withLock { $0.layers.layers.first { $0.descriptor.name.kind == .delta }!.resident! }
        lsn = try await ingest(t, &model, from: lsn, count: 60, seed: 3)
        _ = try await t.compact(forceImageLayers: true)
        #expect(!t.status().layers.map(\.name).contains(held.descriptor.fileName), "the held layer should be garbage now")
        #expect(FileManager.default.fileExists(atPath: f.dir.path + "/" + held.path))
        #expect(try !held.allEntries().isEmpty)  // still readable
        let path = f.dir.path + "/" + held.path
        _ = consume held
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(try unlistedFiles(t).isEmpty)
        await f.manager.shutdown()
    }

    /// No overwrite, ever: a layer file name, once it exists, keeps the same
    /// bytes until it is deleted, across a long random run.
    @Test func noLayerFileIsEverOverwritten() async throws {
        let f = try await TenantFixture.make(checkpointBytes: 40_000) {
            $0.targetFileBytes = 50_000
            $0.compactionThreshold = 3
            $0.imageCreationThreshold = 2
            $0.gcHorizonLsn = 80
        }
        let t = f.tenant
        var model = PageModel()
        var rng = SeededRandom(seed: 5)
        var seen: [String: UInt32] = [:]  // name → CRC of its bytes
        var lsn: UInt64 = 1
        func check() throws {
            let names = Set(try Directory.list(t.path)).filter { LayerName(parsing: $0) != nil }
            for name in names {
                guard let bytes = try? RawFile.openReadOnly(t.path + "/" + name).readAll(limit: 1 << 30) else { continue }
                let crc = Checksum.crc32c(bytes)
                if let old = seen[name] { #expect(old == crc, "\(name) changed its bytes") } else { seen[name] = crc }
            }
            for name in seen.keys where !names.contains(name) { seen[name] = nil }
        }
        for _ in 0..<60 {
            lsn = try await ingest(t, &model, from: lsn, count: Int.random(in: 1...15, using: &rng), flushEvery: 7, seed: rng.next())
            try check()
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: _ = try await t.compact(forceImageLayers: Bool.random(using: &rng))
            case 1: _ = try await t.runCompaction(explicit: false, forceImages: false)
            case 2: try await t.flush()
            default: break
            }
            try check()
        }
        #expect(seen.count > 3)
        await expectPagesMatch(t, model, lsns: [lsn - 1, lsn - 20])
        await f.manager.shutdown()
    }

    /// Reads stay right while ingest, flushes, compaction and GC run at once.
    @Test func concurrentIngestCompactionAndReadsMatchTheModel() async throws {
        let f = try await TenantFixture.make(checkpointBytes: 30_000) {
            $0.targetFileBytes = 40_000
            $0.compactionThreshold = 3
            $0.imageCreationThreshold = 2
            $0.gcHorizonLsn = 200
            $0.compactionPeriod = .milliseconds(20)
        }
        let t = f.tenant
        let run = SharedRun()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var rng = SeededRandom(seed: 9)
                for lsn in 1...1500 as ClosedRange<UInt64> {
                    let k = key(UInt32.random(in: 0..<20, using: &rng))
                    let r: Record = lsn <= 20 || lsn % 4 == 0
                        ? image(k, lsn, seed: rng.next()) : delta(k, lsn, offset: Int(lsn % 8000), bytes: [UInt8(lsn & 0xFF)])
                    run.model.withLock { $0.apply([r]) }
                    _ = try await t.put([r])
                    run.acked.store(lsn, ordering: .releasing)
                }
                run.done.store(true, ordering: .releasing)
            }
            group.addTask {
                while !run.done.load(ordering: .acquiring) {
                    _ = try await t.compact(forceImageLayers: true)
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            for r in 0..<2 {
                group.addTask {
                    var rng = SeededRandom(seed: UInt64(100 + r))
                    var reads = 0
                    while !run.done.load(ordering: .acquiring) || reads < 200 {
                        let top = run.acked.load(ordering: .acquiring)
                        guard top > 300 else { try await Task.sleep(for: .milliseconds(2)); continue }
                        // Stay well above the GC horizon (200 below last_record_lsn).
                        let lsn = UInt64.random(in: (top - 150)...top, using: &rng)
                        let k = key(UInt32.random(in: 0..<20, using: &rng))
                        let want = run.model.withLock { $0.page(k, at: Lsn(lsn)) }
                        switch await readResult(t, k, Lsn(lsn)) {
                        case .success(let got): #expect(got == want, "\(k) at \(lsn)")
                        case .failure(.pageNotFound): #expect(want == nil)
                        case .failure(let e): Issue.record("\(k) at \(lsn): \(e)")
                        }
                        reads += 1
                        await Task.yield()
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(t.status().compactionFailures == 0)
        #expect(try await unlistedFilesWhenIdle(t).isEmpty)
        await f.manager.shutdown()
    }

    @Test func failuresBackOffAndAnExplicitCompactStillRunsAtOnce() async throws {
        let f = try await TenantFixture.make {
            $0.compactionThreshold = 2
            $0.targetFileBytes = 20_000  // several outputs, so the failpoint below fires
            $0.compactionPeriod = .milliseconds(30)
            $0.compactionMaxBackoff = .seconds(60)
        }
        let t = f.tenant
        var model = PageModel()
        try f.failpoints.configure("compaction-after-first-output", .return)
        let end = try await ingest(t, &model, from: 1, count: 60)
        try await waitUntil { t.status().compactionFailures >= 3 }
        let failures = t.status().compactionFailures
        // Exponential: 30, 60, 120, 240 ms… the count grows slowly now.
        try await Task.sleep(for: .milliseconds(200))
        #expect(t.status().compactionFailures <= failures + 2)
        #expect(t.state.withLock { $0.compaction.notBefore } != nil)
        // Reads and ingest are unaffected by the failing compaction.
        await expectPagesMatch(t, model, lsns: [end - 1])
        _ = try await t.put([image(key(1), end)])
        // Deep in back-off (so the background loop cannot get there first), an explicit compact runs at once.
        // Holding the compaction lock meanwhile: no background run is half-way when the failpoint goes.
        await t.compactionLock.lock()
        t.state.withLock { $0.compaction.notBefore = .now + .seconds(600) }
        try f.failpoints.configure("compaction-after-first-output", .off)
        t.compactionLock.unlock()
        let r = try await t.compact()
        #expect(r.layersCreated >= 1)
        #expect(t.status().compactionFailures == 0)
        await f.manager.shutdown()
    }
}

final class SharedRun: Sendable {
    let model = Mutex(PageModel())
    let acked = Atomic<UInt64>(0)
    let done = Atomic<Bool>(false)

    /// A Compact whose only work is its flush says what the flush wrote:
    /// `layergate compact` printed "created 0 layers" for it.
    @Test func aCompactThatOnlyFlushesCountsTheFlushedLayer() async throws {
        let f = try await TenantFixture.make()
        let t = f.tenant
        for lsn in UInt64(1)...10 { _ = try await t.put([image(key(UInt32(lsn)), lsn)]) }
        let r = try await t.compact()
        let layers = t.status().layers
        #expect(layers.count == 1)
        #expect(r.layersCreated == 1 && r.layersRemoved == 0, "\(r)")
        #expect(r.bytesWritten == layers.reduce(0) { $0 + $1.size })
        #expect(try await t.compact() == CompactionResult(), "nothing left to do")
        await f.manager.shutdown()
    }


    /// What a merge writes stays within `CompactionPlan.mergeBound` of what it
    /// read, for mixes of images and deltas of every size whose order in the
    /// merged file differs from their order in each input (so padding moves).
    @Test(arguments: [1, 2, 3, 4])
    func aMergeWritesWithinItsBound(seed: UInt64) async throws {
        let f = try await TenantFixture.make { $0.imageCreationThreshold = 1_000; $0.compactionThreshold = 1_000 }
        let t = f.tenant
        var rng = SeededRandom(seed: seed)
        var lsn: UInt64 = 0
        for _ in 0..<6 {
            for _ in 0..<Int(rng.next(upperBound: UInt64(150)) + 50) {
                lsn += 1
                let k = key(UInt32(rng.next(upperBound: UInt64(40))))
                let r = rng.next(upperBound: UInt64(3)) == 0
                    ? image(k, lsn)
                    : delta(k, lsn, offset: Int(rng.next(upperBound: UInt64(4096))), bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: lsn), count: Int(rng.next(upperBound: UInt64(3000))) + 1),
                            willInit: rng.next(upperBound: UInt64(8)) == 0)
                _ = try await t.put([r])
            }
            try await t.flush()
        }
        let read = t.status().layers.reduce(0) { $0 + $1.size }
        let r = try await t.compact()
        #expect(r.layersRemoved == 6 && r.bytesWritten > read / 2, "read \(read), wrote \(r.bytesWritten)")
        #expect(r.bytesWritten <= CompactionPlan.mergeBound(read, targetBytes: TenantConfig().targetFileBytes), "read \(read), wrote \(r.bytesWritten)")
        await f.manager.shutdown()
    }

}
