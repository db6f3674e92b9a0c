import Foundation
import Synchronization
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

@Suite("Remote storage: eviction and on-demand download")
struct RemoteEvictionTests {
    typealias Remote = RemoteUploadTests.Remote

    /// Eviction only when a test asks (`evictLayers`), with a budget of `budget` bytes.
    static func evicting(budget: Int, period: Duration = .seconds(3600)) -> (inout TenantConfig) -> Void {
        { c in
            RemoteUploadTests.fast(&c)
            c.localLayerBudgetBytes = budget
            c.evictionPeriod = period
        }
    }

    /// A tenant with several layers, all in the store and listed by its remote index.
    func uploadedTenant(_ label: String, store: any RemoteStore, budget: Int = 0, period: Duration = .seconds(3600),
                        cacheSlots: Int = 1024, images: Bool = false, configure: (inout TenantConfig) -> Void = { _ in })
        async throws -> (TenantFixture, PageModel, UInt64)
    {
        let f = try await TenantFixture.make(cacheSlots: cacheSlots, label: label, remote: store) { c in
            Self.evicting(budget: budget, period: period)(&c)
            configure(&c)
        }
        var model = PageModel()
        var end = try await ingest(f.tenant, &model, from: 1, count: 200, flushEvery: 20)
        _ = try await f.tenant.compact(forceImageLayers: images)
        end = try await ingest(f.tenant, &model, from: end, count: 60, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        return (f, model, end)
    }

    /// An uploaded tenant (with image layers) whose every layer was evicted, over a store that counts downloads.
    func evictedTenant(_ label: String, in remote: Remote) async throws -> (TenantFixture, PageModel, UInt64, FlakyStore) {
        let flaky = FlakyStore(try remote.store())
        let (f, model, end) = try await uploadedTenant(label, store: flaky, images: true)
        #expect(f.manager.evictLayers().localBytes == 0)
        return (f, model, end, flaky)
    }

    func expectEachDownloadedOnce(_ store: FlakyStore, sourceLocation: SourceLocation = #_sourceLocation) {
        let counts = store.downloads.withLock { $0 }
        #expect(!counts.isEmpty, sourceLocation: sourceLocation)
        for (key, n) in counts { #expect(n == 1, "\(key) was downloaded \(n) times", sourceLocation: sourceLocation) }
    }

    /// Downloads each layer with its open failing after the publish: each leaves its file under its name.
    func leaveLeftovers(_ layers: [TenantLayer], in f: TenantFixture, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try f.failpoints.configure("remote-download-after-publish", .return)
        for l in layers { #expect(throws: StorageError.self, sourceLocation: sourceLocation) { try l.local() } }
        try f.failpoints.configure("remote-download-after-publish", .off)
    }

    func localFlags(_ t: Tenant) -> [Bool] { t.status().layers.map(\.isLocal) }

    /// Leaves leftovers, then starts an eviction pass (on a thread of its own)
    /// that is held at the removal of the first; returns once it is held.
    func holdAnEviction(of layers: [TenantLayer], in f: TenantFixture) async throws -> Task<(localBytes: Int, evicted: Int), Never> {
        try leaveLeftovers(layers, in: f)
        try f.failpoints.configure("remote-leftover-before-unlink", .pause)
        let pass = inBackground { f.manager.evictLayers() }
        let deadline = ContinuousClock.now + .seconds(10)
        while !layers.contains(where: \.isDownloading) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(layers.contains { $0.isDownloading }, "the pass holds a removal")
        return pass
    }

    @Test func anEvictedLayerComesBackAsANewFileWithTheSameBytes() async throws {
        let remote = Remote()
        let (f, model, end) = try await uploadedTenant("evict-back", store: try remote.store())
        let t = f.tenant
        await expectPagesMatch(t, model, lsns: [end - 1, 150])  // every layer read, blocks cached
        let before = t.state.withLock { $0.layers.layers.compactMap { $0.resident?.fileId } }
        let bytes = t.status().layers.reduce(0) { $0 + $1.size }
        #expect(!before.isEmpty)

        let pass = f.manager.evictLayers()
        #expect(pass.evicted == before.count && pass.localBytes == 0, "a budget of 0 keeps no layer that the store holds")
        #expect(f.layerFiles().isEmpty, "the files are gone from the disk")
        #expect(localFlags(t).allSatisfy { !$0 })
        #expect(bytes > 0)

        await expectPagesMatch(t, model, lsns: [end - 1, 150, 60])
        let after = t.state.withLock { $0.layers.layers.compactMap { $0.resident?.fileId } }
        #expect(!after.isEmpty)
        #expect(Set(after).isDisjoint(with: before), "a downloaded layer is a new file, with a new cache id")
        for id in before { #expect(!f.cache.contains(file: id, block: 0), "no block of the evicted file stays cached") }
        for name in f.layerFiles() {
            #expect(FileManager.default.contents(atPath: t.path + "/" + name) == remote.bytes(name), "\(name) as stored")
        }
        await f.manager.shutdown()
    }

    /// An eviction pass takes its layers from the map and removes their files
    /// after; a reset in between gives the tenant a new map, whose layers open
    /// the same files as local. The pass must not remove them then: a layer
    /// listed as local without its file failed every read of it (INTERNAL)
    /// until a restart (helper-68, resets under reads with a small budget).
    @Test func anEvictionPassThatOutlivesAResetRemovesNoFileOfTheNewMap() async throws {
        let remote = Remote()
        let (f, model, end) = try await uploadedTenant("evict-reset", store: try remote.store())
        let t = f.tenant
        await expectPagesMatch(t, model, lsns: [end - 1, 150])
        let taken = t.state.withLock { $0.layers.layers }  // what a pass holds before it evicts
        #expect(taken.contains { $0.hasLocalFile })
        _ = try await t.reset(dropCache: true)
        let freed = taken.map { $0.evict() }.reduce(0, +)
        #expect(freed == 0, "the old map's layers removed \(freed) bytes of files the new map lists")
        let local = t.status().layers.filter(\.isLocal).map(\.name)
        #expect(!local.isEmpty)
        for name in local { #expect(FileManager.default.fileExists(atPath: t.path + "/" + name), "\(name) is listed as local") }
        await expectPagesMatch(t, model, lsns: [end - 1, 150, 60])
        #expect(f.manager.evictLayers().localBytes == 0, "the new map's own layers evict as ever")
        await expectPagesMatch(t, model, lsns: [end - 1])
        await f.manager.shutdown()
    }

    @Test func concurrentReadsOfOneMissingLayerShareOneDownload() async throws {
        let remote = Remote()
        let (f, model, end, flaky) = try await evictedTenant("evict-share", in: remote)
        let t = f.tenant
        flaky.downloadDelay.withLock { $0 = 0.3 }  // a slow link: the reads overlap the download
        let failures = Tally()
        let expected = (0..<30 as Range<UInt32>).map { model.page(key($0), at: Lsn(end - 1)) }
        await withTaskGroup(of: Void.self) { group in
            for b in 0..<30 as Range<UInt32> {
                group.addTask {
                    let want = expected[Int(b)]
                    switch await readResult(t, key(b), Lsn(end - 1)) {
                    case .success(let got) where got == want: break
                    case .failure(.pageNotFound) where want == nil: break
                    case let other: failures.add("\(key(b)): \(other)")
                    }
                }
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all.keys.sorted().prefix(5))")
        expectEachDownloadedOnce(flaky)
        await f.manager.shutdown()
    }

    /// With `maxRemoteCalls` (the descriptor plan's share), reads of many
    /// evicted layers at once download them that many at a time, and every
    /// read is served: each call holds descriptors while it runs.
    @Test func remoteCallsRunAtMostTheirShareAtOnce() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        let f = try await TenantFixture.make(cacheSlots: 1024, label: "evict-bounded", remote: flaky) { c in
            Self.evicting(budget: 0)(&c)
            c.maxRemoteCalls = 2
        }
        var model = PageModel()
        let end = try await ingest(f.tenant, &model, from: 1, count: 200, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        #expect(f.manager.evictLayers().localBytes == 0)
        let layers = f.tenant.status().layers.count
        #expect(layers >= 6, "\(layers) layers")
        flaky.downloadDelay.withLock { $0 = 0.2 }
        let t = f.tenant
        let wrong = await withTaskGroup(of: Int.self) { group in
            for lsn in [end - 1, 100, 40] {
                for b in 0..<30 as Range<UInt32> {
                    let want = model.page(key(b), at: Lsn(lsn))
                    group.addTask {
                        switch await readResult(t, key(b), Lsn(lsn)) {
                        case .success(let got) where got == want: return 0
                        case .failure(.pageNotFound) where want == nil: return 0
                        default: return 1
                        }
                    }
                }
            }
            return await group.reduce(0, +)
        }
        #expect(wrong == 0, "reads that failed or read other bytes")
        let peak = flaky.downloading.withLock { $0.peak }
        #expect(peak == 2, "\(peak) downloads at once, with 2 allowed and \(layers) layers read together")
        await f.manager.shutdown()
    }

    /// A compaction holds every input layer at once; an eviction pass that
    /// removes their names leaves each a descriptor of its own until the
    /// compaction lets go. Those are bounded (half the loose share): past it
    /// a layer keeps its file until a later pass (helper-70: at `--nofile=56`
    /// 29 of them filled the table, and the compaction and reads failed EMFILE).
    @Test func evictingLayersThatReadersHoldTakesAtMostTheirShareOfDescriptors() async throws {
        let remote = Remote()
        let (f, model, end) = try await uploadedTenant("evict-held", store: try remote.store()) { $0.maxLooseLayerFiles = 4 }
        let t = f.tenant
        var held: [LayerReader] = []  // what a compaction holds
        for layer in t.state.withLock({ $0.layers.layers }) { held.append(try layer.local()) }
        #expect(held.count >= 4, "\(held.count) layers")
        let pass = f.manager.evictLayers()
        #expect(pass.evicted == 2, "\(pass.evicted) of \(held.count) held layers lost their names, with room for 2 descriptors")
        #expect(f.layerFiles().count == held.count - 2)
        await expectPagesMatch(t, model, lsns: [end - 1, 100])
        held = []  // the compaction ends
        #expect(f.manager.evictLayers().localBytes == 0, "the rest go at the next pass")
        #expect(f.layerFiles().isEmpty)
        _ = held
        await f.manager.shutdown()
    }

    /// A download that cannot open what it has just published (a failpoint
    /// here; no descriptor left, for real) leaves the file under its name: it
    /// is the layer, checked before it was published, and another map's read
    /// may hold it already. The next read opens it without downloading again.
    @Test func aDownloadThatCannotOpenWhatItPublishedLeavesItForTheNextRead() async throws {
        let remote = Remote()
        let (f, model, end, flaky) = try await evictedTenant("evict-open", in: remote)
        let t = f.tenant
        try f.failpoints.configure("remote-download-after-publish", .return)
        var failed = 0
        for b in 0..<30 as Range<UInt32> {
            switch await readResult(t, key(b), Lsn(end - 1)) {
            case .failure(.pageNotFound): break
            case .failure: failed += 1
            case .success: break
            }
        }
        #expect(failed > 0, "reads that need a downloaded layer fail while it cannot be opened")
        let published = f.layerFiles()
        #expect(!published.isEmpty, "the downloaded layers keep their names")
        #expect(published.allSatisfy { !$0.contains("___temp") })
        try f.failpoints.configure("remote-download-after-publish", .off)
        await expectPagesMatch(t, model, lsns: [end - 1])
        expectEachDownloadedOnce(flaky)
        await f.manager.shutdown()
    }

    /// The name a failed open leaves (above) goes with its layer when the layer
    /// leaves the map before a read opens it, whichever comes first; after a
    /// reset it is the new map's and stays.
    @Test func aLayerThatLeavesTheMapTakesTheFileAFailedOpenLeft() async throws {
        let remote = Remote()
        let (f, _, _, _) = try await evictedTenant("evict-leftover", in: remote)
        let layers = f.tenant.state.withLock { $0.layers.layers }
        try #require(layers.count >= 3)
        let (first, retired, rest) = (layers[0], layers[1], layers[2...])
        first.deleteWhenUnused()  // gone from the map while remote: its download ends after
        try leaveLeftovers(layers, in: f)
        #expect(!f.layerFiles().contains(first.descriptor.fileName), "a download that ends after its layer left removes what it published")
        #expect(Set(f.layerFiles()) == Set(layers.dropFirst().map(\.descriptor.fileName)), "the others keep their names")
        _ = retired.retire()
        for l in layers.dropFirst() { l.deleteWhenUnused() }
        #expect(f.layerFiles() == [retired.descriptor.fileName], "each leaves with its layer, but for the reset's")
        #expect(rest.allSatisfy { !$0.hasLocalFile })
        await f.manager.shutdown()
    }

    /// The budget counts such a file as local, and an eviction pass removes
    /// it as it removes an open file's name; a read then downloads it again.
    @Test func anEvictionPassCountsAndRemovesTheFilesFailedOpensLeft() async throws {
        let remote = Remote()
        let (f, model, end, _) = try await evictedTenant("evict-leftover-budget", in: remote)
        let layers = f.tenant.state.withLock { $0.layers.layers }
        try leaveLeftovers(layers, in: f)
        #expect(f.layerFiles().count == layers.count && layers.allSatisfy(\.hasLeftover))
        #expect(localFlags(f.tenant).allSatisfy { $0 }, "the status shows such a file as local, as the budget counts it")
        let bytes = layers.reduce(0) { $0 + $1.descriptor.size }
        // A removal that leaves the file frees nothing, and the file stays counted.
        try f.failpoints.configure("remote-leftover-before-unlink", .return)
        let kept = f.manager.evictLayers()
        #expect(kept.evicted == 0 && kept.localBytes == bytes)
        #expect(f.layerFiles().count == layers.count && layers.allSatisfy(\.hasLeftover))
        try f.failpoints.configure("remote-leftover-before-unlink", .off)
        let pass = f.manager.evictLayers()
        #expect(pass.evicted == layers.count && pass.localBytes == 0, "each counted against the budget, and removed")
        #expect(f.layerFiles().isEmpty && !layers.contains(where: \.hasLeftover))
        #expect(localFlags(f.tenant).allSatisfy { !$0 })
        await expectPagesMatch(f.tenant, model, lsns: [end - 1])
        await f.manager.shutdown()
    }

    /// A reset waits for an eviction under way (a leftover's removal held at
    /// a failpoint here) before its new map opens the files, and waits on a
    /// thread of its own: the tenant's status is answered meanwhile.
    @Test func aResetWaitsForAnEvictionUnderWay() async throws {
        let remote = Remote()
        let (f, model, end, _) = try await evictedTenant("evict-reset-wait", in: remote)
        let layers = f.tenant.state.withLock { $0.layers.layers }
        let pass = try await holdAnEviction(of: layers, in: f)
        let held = try #require(layers.first { $0.isDownloading })
        let finished = ResetFinished()
        let reset = Task {
            defer { finished.value.store(true, ordering: .relaxed) }
            return try await f.tenant.reset(dropCache: true)
        }
        try await Task.sleep(for: .milliseconds(300))
        let resetEnded = finished.value.load(ordering: .relaxed)
        #expect(!resetEnded, "the reset waits while the eviction removes its file")
        #expect(f.tenant.status().layers.count == layers.count)
        try f.failpoints.configure("remote-leftover-before-unlink", .off)
        _ = try await reset.value
        let freed = await pass.value
        #expect(freed.evicted == 1, "the held removal ended; the rest were the reset's by then")
        #expect(!f.layerFiles().contains(held.descriptor.fileName))
        let listed = f.tenant.status().layers.filter(\.isLocal).map(\.name)
        // Not the remote claim's temp file, which the upload loop may be writing now.
        let files = f.layerFiles().filter { $0 != RemoteClaim.tempName }
        #expect(Set(listed) == Set(files), "the new map lists as local exactly the files there")
        await expectPagesMatch(f.tenant, model, lsns: [end - 1])
        await f.manager.shutdown()
    }

    /// A reset waiting for an eviction held on a failing disk gives up when
    /// the tenant stops: the close (a shutdown, a detach) waits for the
    /// reset, and must not wait for the disk (helper-76: SIGTERM never ended).
    @Test func aResetWaitingForAnEvictionGivesUpWhenTheTenantStops() async throws {
        let remote = Remote()
        let (f, _, _, _) = try await evictedTenant("evict-reset-stop", in: remote)
        let layers = f.tenant.state.withLock { $0.layers.layers }
        let pass = try await holdAnEviction(of: layers, in: f)
        let reset = Task { try await f.tenant.reset(dropCache: false) }
        try await Task.sleep(for: .milliseconds(200))
        // Let go after 3 s whatever happens, so that a close that waits for the eviction fails the test, not hangs it.
        let release = Task {
            try? await Task.sleep(for: .seconds(3))
            try? f.failpoints.configure("remote-leftover-before-unlink", .off)
        }
        let start = ContinuousClock.now
        await f.tenant.close()
        #expect(ContinuousClock.now - start < .seconds(2), "the close did not wait for the held eviction")
        await #expect(throws: StorageError.self) { try await reset.value }
        #expect(f.tenant.lifecycle == .stopped)
        release.cancel()
        try f.failpoints.configure("remote-leftover-before-unlink", .off)
        _ = await pass.value
        await f.manager.shutdown()
    }

    /// A read of the layer while its leftover goes waits, then downloads
    /// afresh: had it opened the leftover, its file would lose its name
    /// under it, and a later reopen of the descriptor would fail.
    @Test func aReadDuringALeftoversRemovalDownloadsAfresh() async throws {
        let remote = Remote()
        let (f, _, _, flaky) = try await evictedTenant("evict-leftover-race", in: remote)
        let layer = try #require(f.tenant.state.withLock { $0.layers.layers.first })
        let name = layer.descriptor.fileName
        try leaveLeftovers([layer], in: f)
        #expect(f.layerFiles() == [name])
        // Both block (a pause, a wait): on threads of their own, never the few of Swift's pool.
        try f.failpoints.configure("remote-leftover-before-unlink", .pause)
        let leaving = inBackground { layer.deleteWhenUnused() }
        let deadline = ContinuousClock.now + .seconds(10)
        while !layer.isDownloading && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(layer.isDownloading, "the removal holds the layer")
        // The read starts while the removal is held; it is let go once the read waits (or opened the leftover, before the mend).
        let reading = inBackground { Result { () throws(StorageError) in try layer.local() } }
        try await Task.sleep(for: .milliseconds(200))
        try f.failpoints.configure("remote-leftover-before-unlink", .off)
        let reader = try await reading.value.get()
        await leaving.value
        #expect(f.layerFiles() == [name], "the read's file keeps its name while the read holds it")
        #expect(reader.descriptor.fileName == name)
        #expect(flaky.downloads.withLock { $0.values.reduce(0, +) } == 2, "downloaded again after the leftover went")
        withExtendedLifetime(reader) {}
        await f.manager.shutdown()
    }

    /// A reset that cannot reload leaves the old map serving: its layers are
    /// its own again, so eviction keeps the budget (before, they stayed
    /// retired until the next reset that loaded, and the budget went unkept).
    @Test func aResetThatCannotReloadGivesItsLayersBackToEviction() async throws {
        let remote = Remote()
        let (f, model, end, _) = try await evictedTenant("evict-abandoned", in: remote)
        let t = f.tenant
        try f.failpoints.configure("no-descriptors", .return)
        do {
            _ = try await t.reset(dropCache: false)
            Issue.record("a reset with no descriptors reloaded")
        } catch {
            guard case .resourceExhausted = error else { throw error }
        }
        try f.failpoints.configure("no-descriptors", .off)
        await expectPagesMatch(t, model, lsns: [end - 1])  // downloads layers back
        #expect(localFlags(t).contains(true))
        let pass = f.manager.evictLayers()
        #expect(pass.evicted > 0 && pass.localBytes == 0, "the old map's layers are evicted again")
        await f.manager.shutdown()
    }

    @Test func evictionUnderConcurrentReadsServesNoWrongBytesAndEveryLayerComesBack() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        // A budget of about one layer, a pass every 5 ms and a cache of 16 blocks: most reads need the file.
        let (f, model, end) = try await uploadedTenant("evict-race", store: flaky, budget: 40 << 10,
                                                       period: .milliseconds(5), cacheSlots: 16)
        let t = f.tenant
        let wrong = Tally()
        let reads = Tally()
        // What to read, and what it must be, worked out before the readers start.
        var rng = SeededRandom(seed: 7)
        let probes = (0..<600).map { _ -> (PageKey, Lsn, [UInt8]?) in
            let k = key(UInt32.random(in: 0..<30, using: &rng))
            let lsn = Lsn(UInt64.random(in: 1..<end, using: &rng))
            return (k, lsn, model.page(k, at: lsn))
        }
        let deadline = ContinuousClock.now + .seconds(3)
        await withTaskGroup(of: Void.self) { group in
            for reader in 0..<4 {
                group.addTask {
                    var i = reader * 150
                    while ContinuousClock.now < deadline {
                        let (k, lsn, want) = probes[i % probes.count]
                        i += 1
                        switch await readResult(t, k, lsn) {
                        case .success(let got) where got == want: break
                        case .failure(.pageNotFound) where want == nil: break
                        case let other: wrong.add("\(k) at \(lsn): \(other)")
                        }
                        reads.add("read")
                    }
                }
            }
        }
        #expect(wrong.all.isEmpty, "\(wrong.all.keys.sorted().prefix(5))")
        let downloads = flaky.downloads.withLock { $0.values.reduce(0, +) }
        #expect(downloads > 3, "layers were evicted and downloaded again (\(downloads) downloads, \(reads.all["read"] ?? 0) reads)")
        // Every layer, evicted or not, serves again.
        await expectPagesMatch(t, model, lsns: [end - 1, 130, 20])
        try await waitFor("an eviction pass keeps the local files within the budget") {
            t.status().layers.filter(\.isLocal).reduce(0) { $0 + $1.size } <= 40 << 10
        }
        #expect(try unlistedFiles(t).allSatisfy { $0.hasSuffix(".___temp") == false }, "no download leftovers")
        await f.manager.shutdown()
    }

    @Test func aStoredObjectWithOtherBytesIsRefusedNeverServed() async throws {
        let remote = Remote()
        let (f, model, end) = try await uploadedTenant("evict-rot", store: try remote.store(), images: true)
        let t = f.tenant
        #expect(f.manager.evictLayers().localBytes == 0)
        // Bit rot in the store: the same size, other bytes.
        let victim = try #require(t.status().layers.first?.name)
        let good = try #require(remote.bytes(victim))
        var bad = good
        bad[bad.count / 2] ^= 0xff
        try bad.write(to: URL(fileURLWithPath: remote.tenantDir + "/" + victim))

        var refused = 0
        for b in 0..<30 as Range<UInt32> {
            switch await readResult(t, key(b), Lsn(end - 1)) {
            case .success(let got): #expect(got == model.page(key(b), at: Lsn(end - 1)), "\(key(b)) never from the damaged copy")
            case .failure(.corruptLayer(let file, let reason)):
                #expect(file.hasSuffix(victim) && reason.contains("remote storage"), "\(reason)")
                refused += 1
            case .failure(.pageNotFound) where model.page(key(b), at: Lsn(end - 1)) == nil: break
            case .failure(let e): Issue.record("\(key(b)): \(e)")
            }
        }
        #expect(refused > 0, "reads that need the damaged layer fail")
        #expect(!f.layerFiles().contains(victim), "nothing damaged is published locally")
        #expect(f.layerFiles().allSatisfy { !$0.contains("___temp") })

        try good.write(to: URL(fileURLWithPath: remote.tenantDir + "/" + victim))
        await expectPagesMatch(t, model, lsns: [end - 1])
        await f.manager.shutdown()
    }

    @Test func aRestartKeepsEvictedLayersRemoteAndCompactionDownloadsItsInputs() async throws {
        let remote = Remote()
        let (f, model0, end0) = try await uploadedTenant("evict-restart", store: try remote.store())
        var model = model0
        #expect(f.manager.evictLayers().localBytes == 0)
        // A download a crash cut short left its temp file; the next load sweeps it and the download is unhindered.
        let layer = try #require(f.tenant.status().layers.first?.name)
        let leftover = f.tenant.path + "/\(layer).download-1.___temp"
        try Data("half a download".utf8).write(to: URL(fileURLWithPath: leftover))
        let (m, t) = try await f.reopen()
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(t.lifecycle == .active, "index.json lists layers that are only in the store: \(t.status().lastLoadError ?? "")")
        #expect(localFlags(t).allSatisfy { !$0 })
        await expectPagesMatch(t, model, lsns: [end0 - 1, 100])

        // More L0 layers, everything evicted again, then a compaction that must read them all.
        let end = try await ingest(t, &model, from: end0, count: 80, flushEvery: 20)
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        #expect(m.evictLayers().localBytes == 0)
        let compacted = try await t.compact(forceImageLayers: true)
        #expect(compacted.layersCreated > 0)
        await expectPagesMatch(t, model, lsns: [end - 1, end0 + 10, 100])
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        await m.shutdown()
    }

    /// A real tmpfs as the data directory: a download that would eat the room
    /// kept for flushes is refused, naming the layer, and leaves nothing behind.
    @Test func aDownloadOnAFullDiskIsRefusedAndTheReadWorksOnceThereIsRoom() async throws {
        let dir = TempDir("evict-full")
        guard let tmpfs = MountedTmpfs.mount(at: dir.path + "/tmpfs", size: "24m",
                                             test: "aDownloadOnAFullDiskIsRefusedAndTheReadWorksOnceThereIsRoom") else { return }
        defer { tmpfs.unmount(); withExtendedLifetime(dir) {} }
        let remote = Remote()
        var config = TenantConfig()
        Self.evicting(budget: 0)(&config)
        config.diskReserveBytes = 1 << 20
        config.checkpointDistanceBytes = 1 << 20
        config.compactionPeriod = .seconds(3600)
        let m = try TenantManager(dataDirectory: tmpfs.path + "/data", config: config, cache: PageCache(capacity: 64),
                                  failpoints: Failpoints(), remote: try remote.store(), logger: quietLogger())
        let t = try await m.create(testTenant)
        var model = PageModel()
        let end = try await ingest(t, &model, from: 1, count: 400, flushEvery: 100)
        _ = try await t.compact(forceImageLayers: true)
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        #expect(m.evictLayers().localBytes == 0)
        let largest = try #require(t.status().layers.map(\.size).max())

        // Fill the disk until less than the largest layer (and the reserve) is free.
        let filler = tmpfs.path + "/filler"
        let free = try #require(try FileManager.default.attributesOfFileSystem(forPath: tmpfs.path)[.systemFreeSize] as? Int)
        try Data(count: max(0, free - largest / 2)).write(to: URL(fileURLWithPath: filler))
        var refused = 0
        for b in 0..<30 as Range<UInt32> {
            switch await readResult(t, key(b), Lsn(end - 1)) {
            case .success(let got): #expect(got == model.page(key(b), at: Lsn(end - 1)))
            case .failure(.resourceExhausted(let why)):
                #expect(why.contains("layer ") && why.contains("no room to download") && !why.contains(tmpfs.path), "\(why)")
                refused += 1
            case .failure(.pageNotFound) where model.page(key(b), at: Lsn(end - 1)) == nil: break
            case .failure(let e): Issue.record("\(key(b)): \(e)")
            }
        }
        #expect(refused > 0)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: tmpfs.path + "/data/tenants/\(testTenant)")
        #expect(leftovers.allSatisfy { !$0.contains("___temp") }, "\(leftovers)")

        try FileManager.default.removeItem(atPath: filler)
        await expectPagesMatch(t, model, lsns: [end - 1, 150])
        await m.shutdown()
    }

    /// The tenant's directory turned read-only under the server (what ext4
    /// does to a whole filesystem after an I/O error): a read that needs a
    /// download is refused as this server's disk failing (`localIO`, INTERNAL
    /// on the wire), not the store's (TENANT_UNAVAILABLE) nor a shortage,
    /// names no path, leaves the tenant serving, and works once the
    /// directory is writable again.
    @Test func aDownloadOntoADiskTurnedReadOnlyBlamesThisServersDisk() async throws {
        let remote = Remote()
        let (f, model, end, _) = try await evictedTenant("evict-ro", in: remote)
        guard let readOnly = try await ReadOnlyBind.make(f.tenant.path, test: "aDownloadOntoADiskTurnedReadOnlyBlamesThisServersDisk")
        else { await f.manager.shutdown(); return }
        defer { readOnly.release() }
        var refused = 0
        for b in 0..<30 as Range<UInt32> {
            switch await readResult(f.tenant, key(b), Lsn(end - 1)) {
            case .success(let got): #expect(got == model.page(key(b), at: Lsn(end - 1)))
            case .failure(.pageNotFound) where model.page(key(b), at: Lsn(end - 1)) == nil: break
            case .failure(let e):
                guard case .remote(_, .localIO(let op, _, _)) = e else { Issue.record("\(key(b)): \(e)"); continue }
                #expect(op == "download")
                #expect(!"\(e)".contains(f.tenant.path) && "\(e)".contains("this server's own disk"), "\(e)")
                refused += 1
            }
        }
        #expect(refused > 0)
        #expect(f.tenant.status().state == .active, "a read-only directory under a download does not break the tenant")
        readOnly.release()
        await expectPagesMatch(f.tenant, model, lsns: [end - 1])
        await f.manager.shutdown()
    }

    /// A download whose file cannot be made for want of descriptors or of
    /// space: this server's shortage (`exhausted`, RESOURCE_EXHAUSTED on the
    /// wire), never the store's; the reads work once there are some again.
    @Test(arguments: ["no-descriptors", "disk-full"])
    func aDownloadWithoutDescriptorsOrSpaceIsTheServersShortageNotTheStores(failpoint: String) async throws {
        let remote = Remote()
        let (f, model, end, _) = try await evictedTenant("evict-\(failpoint)", in: remote)
        try f.failpoints.configure(failpoint, .return)
        var shortages = 0
        for b in 0..<30 as Range<UInt32> {
            switch await readResult(f.tenant, key(b), Lsn(end - 1)) {
            case .failure(let e) where e.isResourceExhaustion:
                guard case .remote(_, .exhausted(let op, _, _)) = e else { Issue.record("\(key(b)): \(e)"); continue }
                #expect(op == "download")
                shortages += 1
            case .success, .failure(.pageNotFound): break
            case .failure(let e): Issue.record("\(key(b)): \(e)")
            }
        }
        #expect(shortages > 0)
        try f.failpoints.configure(failpoint, .off)
        await expectPagesMatch(f.tenant, model, lsns: [end - 1])
        await f.manager.shutdown()
    }

    /// Whose failure a failed call is, as the store's calls report it.
    @Test func aFailedCallIsTheServersShortageOnlyForItsOwnResources() {
        func exhausted(_ e: RemoteError) -> Bool { if case .exhausted = e { return true } else { return false } }
        func unavailable(_ e: RemoteError) -> Bool { if case .unavailable = e { return true } else { return false } }
        func localIO(_ e: RemoteError) -> Bool { if case .localIO = e { return true } else { return false } }
        for e in [EMFILE, ENFILE, ENOMEM] {
            #expect(exhausted(.failed("get", "k", "r", errno: e)))
            #expect(exhausted(.failed("download", "k", "r", errno: e, local: true)))
        }
        #expect(exhausted(.failed("download", "k", "r", errno: ENOSPC, local: true)))
        #expect(exhausted(.failed("download", "k", "r", errno: EDQUOT, local: true)))
        // A full store, a refused connection, an unknown cause, the store's EIO: the store's.
        #expect(unavailable(.failed("write", "k", "r", errno: ENOSPC)))
        #expect(unavailable(.failed("GET", "k", "r", errno: ECONNREFUSED)))
        #expect(unavailable(.failed("GET", "k", "r", errno: nil)))
        #expect(unavailable(.failed("get", "k", "r", errno: EIO)))
        // This server's disk failing a call of its own: neither a shortage nor the store.
        for e in [EIO, EROFS, EFBIG] as [Int32?] + [nil] { #expect(localIO(.failed("download", "k", "r", errno: e, local: true))) }
        #expect(StorageError.remote(testTenant, .exhausted(operation: "get", key: "k", reason: "r")).isResourceExhaustion)
        #expect(!StorageError.remote(testTenant, .localIO(operation: "get", key: "k", reason: "r")).isResourceExhaustion)
    }

    /// After a restart the objects are known from the remote index only: each
    /// is read back before its local copy goes, and one with rotten bytes (the
    /// same size) keeps its local copy, with the conflict in the status.
    @Test func anObjectRottenInTheStoreIsFoundBeforeItsLocalCopyGoes() async throws {
        let remote = Remote()
        let (f, model, end) = try await uploadedTenant("evict-verify", store: try remote.store(), images: true)
        let (m, t) = try await f.reopen()
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        let victim = try #require(t.status().layers.first { $0.isImage }?.name)
        var bad = try #require(remote.bytes(victim))
        bad[bad.count / 3] ^= 0x11
        try bad.write(to: URL(fileURLWithPath: remote.tenantDir + "/" + victim))

        let pass = m.evictLayers()
        #expect(pass.evicted == t.status().layers.count - 1, "every other layer goes")
        #expect(t.status().layers.filter(\.isLocal).map(\.name) == [victim], "the rotten object's local copy stays")
        try await waitFor("the conflict is reported") { t.status().remote?.lastUploadError?.contains(victim) == true }
        await expectPagesMatch(t, model, lsns: [end - 1, 150])
        await m.shutdown()
    }

    /// Objects lost from the store while nothing changes here: a periodic
    /// listing finds them; one with a local copy is uploaded again, one whose
    /// copy was evicted is reported.
    @Test func anObjectLostFromTheStoreIsFoundByThePeriodicListing() async throws {
        let remote = Remote()
        let f = try await TenantFixture.make(label: "evict-audit", remote: try remote.store()) { c in
            Self.evicting(budget: 0)(&c)
            c.remoteAuditPeriod = .milliseconds(100)
        }
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        let t = f.tenant
        let names = t.status().layers.map(\.name)
        #expect(names.count == 3)
        #expect(f.manager.evictLayers().evicted == 3)
        await expectPagesMatch(t, model, lsns: [30])  // brings back the layers below LSN 30, not the newest
        let local = try #require(t.status().layers.first(where: \.isLocal)?.name)
        let evicted = try #require(t.status().layers.first { !$0.isLocal }?.name)
        try FileManager.default.removeItem(atPath: remote.tenantDir + "/" + local)
        try await waitFor("the lost object with a local copy is uploaded again") { remote.bytes(local) != nil }
        #expect(remote.bytes(local) == FileManager.default.contents(atPath: t.path + "/" + local))

        try FileManager.default.removeItem(atPath: remote.tenantDir + "/" + evicted)
        try await waitFor("the lost object without a local copy is reported") {
            t.status().remote?.lastUploadError?.contains(evicted) == true
        }
        await f.manager.shutdown()
    }

    @Test func withoutABudgetNothingIsEvicted() async throws {
        let remote = Remote()
        let f = try await TenantFixture.make(label: "evict-none", remote: try remote.store(), configure: RemoteUploadTests.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        #expect(f.manager.evictLayers().evicted == 0)
        #expect(f.layerFiles().count == 3)
        await f.manager.shutdown()
    }
}

/// Set when the reset of `aResetWaitsForAnEvictionUnderWay` has ended, whichever way.
private final class ResetFinished: Sendable {
    let value = Atomic<Bool>(false)
}

/// Starts `body` on a thread of its own: for calls that block until another task acts.
private func inBackground<T: Sendable>(_ body: @escaping @Sendable () -> T) -> Task<T, Never> {
    Task { await onThread(body) }
}
