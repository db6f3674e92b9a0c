import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

@Suite("Remote storage: attach and detach")
struct RemoteAttachTests {
    typealias Remote = RemoteUploadTests.Remote

    func manager(_ dir: TempDir, _ store: any RemoteStore, failpoints: Failpoints = Failpoints()) throws -> TenantManager {
        var config = TenantConfig()
        config.compactionPeriod = .seconds(3600)
        RemoteUploadTests.fast(&config)
        return try TenantManager(dataDirectory: dir.path, config: config, cache: PageCache(capacity: 1024),
                                 failpoints: failpoints, remote: store, logger: quietLogger())
    }

    /// A tenant at a first server: `count` records from LSN 1 (a layer per
    /// 20), all of it in the store; the pages it holds, the end LSN and its generation.
    func uploadedSource(_ label: String, _ remote: Remote, count: Int) async throws
        -> (fixture: TenantFixture, model: PageModel, end: UInt64, generation: UInt32)
    {
        let f = try await TenantFixture.make(label: label, remote: try remote.store(), configure: RemoteUploadTests.fast)
        var model = PageModel()
        let end = try await ingest(f.tenant, &model, from: 1, count: count, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        return (f, model, end, f.tenant.status().generation)
    }

    /// A read still downloading a layer when its tenant is detached, or reset
    /// (the reload sweeps the download's temp file as a leftover), fails as a
    /// read of a stopped or reloaded tenant (TENANT_UNAVAILABLE to a client,
    /// who reads again), not as the I/O error that the file or directory taken
    /// from under the download makes of it (INTERNAL). The failpoint only holds
    /// the download back long enough; the failure is the real filesystem's.
    @Test(arguments: [false, true])
    func aReadDownloadingALayerWhenItsTenantIsDetachedOrResetFailsAsTheTenants(reset: Bool) async throws {
        let remote = Remote()
        let src = try await uploadedSource("detach-src", remote, count: 40)
        await src.fixture.manager.shutdown()
        let (model, end, generation) = (src.model, src.end, src.generation)

        let disk = TempDir("detach-during-download")
        let failpoints = Failpoints()
        try failpoints.enable(environment: nil)
        let m = try manager(disk, try remote.store(), failpoints: failpoints)
        let (t, _) = try await m.attach(testTenant, generation: generation + 1)
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))  // so that a detach has nothing to wait for
        try failpoints.configure("remote-download-before-publish", .sleep(milliseconds: 1500))
        let read = Task { try await t.getPage(key: key(1), lsn: nil) }
        try await Task.sleep(for: .milliseconds(300))  // the read is held in its download by now
        if reset {
            _ = try await t.reset(dropCache: false)
            await #expect(throws: StorageError.tenantUnavailable(testTenant, state: "reloaded by a reset during the read")) {
                _ = try await read.value
            }
            try failpoints.configure("remote-download-before-publish", .off)
            await expectPagesMatch(t, model, lsns: [end - 1])  // read again, it is served
        } else {
            _ = try await m.detach(testTenant)
            await #expect(throws: StorageError.tenantUnavailable(testTenant, state: "stopped")) { _ = try await read.value }
            #expect(disk.files("tenants").isEmpty)
        }
        await m.shutdown()
    }

    @Test func aServerWithAnEmptyDiskAttachesTheNextGenerationAndServesEveryPage() async throws {
        let remote = Remote()
        let f = try await TenantFixture.make(label: "attach-src", remote: try remote.store(), configure: RemoteUploadTests.fast)
        var model = PageModel()
        var end = try await ingest(f.tenant, &model, from: 1, count: 200, flushEvery: 20)
        _ = try await f.tenant.compact()
        end = try await ingest(f.tenant, &model, from: end, count: 40, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        let generation = f.tenant.status().generation
        let listed = try IndexFile.read(directory: f.tenant.path).layers.count
        await f.manager.shutdown()

        // The host is gone: a server with nothing on its disk takes over.
        let disk = TempDir("attach-dst")
        let m = try manager(disk, try remote.store())
        let (t, layers) = try await m.attach(testTenant, generation: generation + 1)
        #expect(layers == listed)
        #expect(t.status().generation == generation + 1)
        // It serves at once: no layer is downloaded before a read needs it.
        #expect(t.status().layers.allSatisfy { !$0.isLocal })
        #expect(disk.files("tenants/\(testTenant)").allSatisfy { LayerName(parsing: $0) == nil })
        await expectPagesMatch(t, model, lsns: [end - 1, 200, 120, 41])
        #expect(t.status().layers.contains { $0.isLocal }, "the reads downloaded what they needed")

        // What it writes carries its generation, and its own remote index lists it.
        end = try await ingest(t, &model, from: end, count: 20, flushEvery: 20)
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        let mine = try remote.index(generation: generation + 1)
        #expect(mine.layers.contains { LayerName(parsing: $0.name)?.generation == generation + 1 })
        #expect(mine.diskConsistentLsn == end - 1)

        // An index of that generation exists now: a second attach with it is refused.
        let other = TempDir("attach-other")
        let m2 = try manager(other, try remote.store())
        await #expect(throws: StorageError.self) { _ = try await m2.attach(testTenant, generation: generation + 1) }
        #expect(other.files("tenants").isEmpty, "a refused attach leaves nothing")
        await #expect(throws: StorageError.self) { _ = try await m.attach(testTenant, generation: generation + 5) }

        // Detach: everything uploaded, then gone from this server, even with a crashed attempt's leftover in the way.
        try FileManager.default.createDirectory(atPath: disk.path + "/tenants/\(testTenant).___temp/leftover",
                                                withIntermediateDirectories: true)
        _ = try await t.put([image(key(3), end, seed: 99)])
        model.apply([image(key(3), end, seed: 99)])
        let lsn = try await m.detach(testTenant)
        #expect(lsn == Lsn(end))
        #expect(throws: StorageError.self) { _ = try m.tenant(testTenant) }
        #expect(disk.files("tenants").isEmpty)
        await m.shutdown()
        await m2.shutdown()

        // And back: a third server finds the detached tenant's last record.
        let third = TempDir("attach-third")
        let m3 = try manager(third, try remote.store())
        let (t3, _) = try await m3.attach(testTenant, generation: generation + 3)
        await expectPagesMatch(t3, model, lsns: [end, end - 1, 100])
        await m3.shutdown()
    }

    @Test func anOlderGenerationStillRunningNeverTouchesTheNewerOnesObjects() async throws {
        let remote = Remote()
        let src = try await uploadedSource("attach-old", remote, count: 100)
        let (old, g) = (src.fixture, src.generation)
        var (model, end) = (src.model, src.end)

        let disk = TempDir("attach-new")
        let m = try manager(disk, try remote.store())
        let (new, _) = try await m.attach(testTenant, generation: g + 1)
        var newModel = model
        let newEnd = try await ingest(new, &newModel, from: end, count: 40, flushEvery: 20, seed: 7)
        #expect(await new.waitUntilUploaded(timeout: .seconds(20)))
        let newer = Dictionary(uniqueKeysWithValues: remote.objects().compactMap { name -> (String, Data?)? in
            guard name.hasPrefix(RemoteIndex.namePrefix) ? name.hasSuffix(String(format: "%08x", g + 1))
                : LayerName(parsing: name)?.generation == g + 1 else { return nil }
            return (name, remote.bytes(name))
        })
        #expect(newer.count >= 2)

        // The old server goes on ingesting and compacting.
        end = try await ingest(old.tenant, &model, from: end, count: 80, flushEvery: 20, seed: 3)
        _ = try await old.tenant.compact()
        try await waitFor("the old server sees the newer generation") { old.tenant.status().remote?.fencedByGeneration == g + 1 }
        try await Task.sleep(for: .milliseconds(300))
        for (name, bytes) in newer { #expect(remote.bytes(name) == bytes, "\(name) of generation \(g + 1) is untouched") }
        // Neither does it delete what the newer index lists, nor write objects of its own generation any more.
        let index = try remote.index(generation: g + 1)
        for layer in index.layers { #expect(remote.bytes(layer.name) != nil, "\(layer.name) is listed by the newer index") }
        await expectPagesMatch(new, newModel, lsns: [newEnd - 1, 50])
        await m.shutdown()
        await old.manager.shutdown()
    }

    /// A server that restarts (or resets) after another attached the tenant
    /// with the next generation loads with that same generation: it must
    /// write nothing under it, and say so.
    @Test(arguments: [false, true])
    func aServerThatReloadsIntoAnotherServersGenerationWritesNothing(reset: Bool) async throws {
        let remote = Remote()
        let src = try await uploadedSource("gen-clash-old", remote, count: 60)
        let (old, g) = (src.fixture, src.generation)
        var (model, end) = (src.model, src.end)

        let disk = TempDir("gen-clash-new")
        let m = try manager(disk, try remote.store())
        let (new, _) = try await m.attach(testTenant, generation: g + 1)
        #expect(await new.waitUntilUploaded(timeout: .seconds(20)))
        let theirs = Dictionary(uniqueKeysWithValues: remote.objects().map { ($0, remote.bytes($0)) })

        // The old server comes back with generation g + 1 too.
        let (oldManager, reloaded): (TenantManager, Tenant)
        if reset {
            _ = try await old.tenant.reset(dropCache: false)
            (oldManager, reloaded) = (old.manager, old.tenant)
        } else {
            (oldManager, reloaded) = try await old.reopen()
        }
        #expect(reloaded.status().generation == g + 1)
        end = try await ingest(reloaded, &model, from: end, count: 60, flushEvery: 20, seed: 5)
        _ = try await reloaded.compact()
        try await waitFor("the reloaded server says another writes its generation") {
            reloaded.status().remote?.fencedByGeneration == g + 1
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(Set(remote.objects()) == Set(theirs.keys), "no object added or removed by the reloaded server")
        for (name, bytes) in theirs { #expect(remote.bytes(name) == bytes, "\(name) untouched") }
        await expectPagesMatch(reloaded, model, lsns: [end - 1, 30], "the reloaded server still serves what it holds")

        // Reloaded again, it takes generation g + 2, above the other server's: the fence it recorded still holds.
        let (againManager, again): (TenantManager, Tenant)
        if reset {
            _ = try await reloaded.reset(dropCache: false)
            (againManager, again) = (oldManager, reloaded)
        } else {
            await oldManager.shutdown()
            let m2 = try TenantManager(dataDirectory: old.dir.path, config: oldManager.config, cache: PageCache(capacity: 1024),
                                       failpoints: Failpoints(), remote: try remote.store(), logger: quietLogger())
            try await m2.loadAll()
            (againManager, again) = (m2, try m2.tenant(testTenant))
        }
        #expect(again.status().generation == g + 2)
        end = try await ingest(again, &model, from: end, count: 40, flushEvery: 20, seed: 9)
        _ = try await again.compact()
        try await waitFor("the fence holds across the reload") { again.status().remote?.fencedByGeneration == g + 1 }
        try await Task.sleep(for: .milliseconds(300))
        #expect(Set(remote.objects()) == Set(theirs.keys), "still no object added or removed")
        for (name, bytes) in theirs { #expect(remote.bytes(name) == bytes, "\(name) still untouched") }
        await againManager.shutdown()
        await m.shutdown()
    }

    /// The store loses the tenant for a while (its directory moved away) just
    /// as a stale server comes back: it writes an index of the other server's
    /// generation there. When the other server's copy comes back, the stale
    /// server finds that index holds bytes it never wrote, and stops, running
    /// or restarted, writing and deleting nothing.
    @Test func aStaleServerThatWroteIntoAnEmptiedStoreStopsWhenTheOwnersCopyComesBack() async throws {
        let remote = Remote()
        let src = try await uploadedSource("gen-vanish-old", remote, count: 60)
        let (old, g) = (src.fixture, src.generation)
        var (model, end) = (src.model, src.end)
        await old.manager.shutdown()

        let disk = TempDir("gen-vanish-new")
        let m = try manager(disk, try remote.store())
        let (new, _) = try await m.attach(testTenant, generation: g + 1)
        var newModel = model
        _ = try await ingest(new, &newModel, from: end, count: 40, flushEvery: 20, seed: 7)
        #expect(await new.waitUntilUploaded(timeout: .seconds(20)))
        await m.shutdown()
        let theirs = Dictionary(uniqueKeysWithValues: remote.objects().map { ($0, remote.bytes($0)) })

        // The tenant's objects vanish from the store; the stale server restarts (generation g + 1) and fills it.
        let aside = remote.dir.path + "/aside"
        try FileManager.default.moveItem(atPath: remote.tenantDir, toPath: aside)
        let (oldManager, stale) = try await old.reopen()
        #expect(stale.status().generation == g + 1)
        #expect(await stale.waitUntilUploaded(timeout: .seconds(20)), "an empty store: nothing tells it another server exists")

        // The owner's copy comes back while the stale server runs; it writes again.
        try FileManager.default.removeItem(atPath: remote.tenantDir)
        try FileManager.default.moveItem(atPath: aside, toPath: remote.tenantDir)
        end = try await ingest(stale, &model, from: end, count: 40, flushEvery: 20, seed: 3)
        try await waitFor("it finds the index of its generation holds bytes it did not write") {
            stale.status().remote?.fencedByGeneration == g + 1
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(Set(remote.objects()) == Set(theirs.keys))
        for (name, bytes) in theirs { #expect(remote.bytes(name) == bytes, "\(name) untouched") }

        // Restarted into generation g + 2, above the owner's: still nothing written.
        await oldManager.shutdown()
        let m2 = try TenantManager(dataDirectory: old.dir.path, config: oldManager.config, cache: PageCache(capacity: 1024),
                                   failpoints: Failpoints(), remote: try remote.store(), logger: quietLogger())
        try await m2.loadAll()
        let again = try m2.tenant(testTenant)
        #expect(again.status().generation == g + 2)
        _ = try await ingest(again, &model, from: end, count: 40, flushEvery: 20, seed: 4)
        _ = try await again.compact()
        try await waitFor("still fenced") { again.status().remote?.fencedByGeneration != nil }
        try await Task.sleep(for: .milliseconds(300))
        #expect(Set(remote.objects()) == Set(theirs.keys), "nothing added or deleted")
        for (name, bytes) in theirs { #expect(remote.bytes(name) == bytes, "\(name) still untouched") }
        await m2.shutdown()
    }

    @Test func aCreatedIndexWhoseAnswerWasLostIsRecognizedAsOurs() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        flaky.loseCreateAnswers.withLock { $0 = 1 }
        let f = try await TenantFixture.make(label: "lost-create", remote: flaky, configure: RemoteUploadTests.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 40, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        let status = try #require(f.tenant.status().remote)
        #expect(status.fencedByGeneration == nil && status.remoteConsistentLsn == f.tenant.status().diskConsistentLsn, "\(status)")
        await f.manager.shutdown()
    }

    @Test func attachAndDetachNeedRemoteStorage() async throws {
        let f = try await TenantFixture.make(label: "attach-none")
        await #expect(throws: StorageError.self) { _ = try await f.manager.attach(testTenant, generation: 9) }
        await #expect(throws: StorageError.self) { _ = try await f.manager.detach(testTenant) }
        await f.manager.shutdown()
    }
}
