import Foundation
import Synchronization
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// A store that fails the operations it is told to, as an unreachable or
/// refusing object store would, and otherwise passes them to a real one.
final class FlakyStore: RemoteStore {
    enum Op: Hashable { case putIfAbsent, replace, get, list, delete }
    let base: any RemoteStore
    let failing = Mutex<Set<Op>>([])
    let calls = Mutex<[Op: Int]>([:])
    /// Runs before each delete reaches the store (a newer server acting meanwhile, say).
    let beforeDelete = Mutex<(@Sendable (String) -> Void)?>(nil)
    /// Downloads per key, and a delay each takes (a slow link), in seconds.
    let downloads = Mutex<[String: Int]>([:])
    let downloadDelay = Mutex<Double?>(nil)
    /// Downloads running now, and the most that ran at once.
    let downloading = Mutex<(now: Int, peak: Int)>((0, 0))
    var description: String { "flaky " + base.description }

    init(_ base: any RemoteStore) { self.base = base }

    private func check(_ op: Op, _ key: String) throws(RemoteError) {
        calls.withLock { $0[op, default: 0] += 1 }
        if failing.withLock({ $0.contains(op) }) { throw .unavailable(operation: "\(op)", key: key, reason: "the store is down (test)") }
    }

    /// Runs before each put reaches the store (a compaction's GC taking the local file meanwhile, say).
    let beforePut = Mutex<(@Sendable (LocalObject) -> Void)?>(nil)
    func putIfAbsent(_ key: String, from source: LocalObject) throws(RemoteError) -> RemotePut {
        try check(.putIfAbsent, key)
        beforePut.withLock { $0 }?(source)
        return try base.putIfAbsent(key, from: source)
    }
    func replace(_ key: String, bytes: [UInt8]) throws(RemoteError) {
        try check(.replace, key)
        try base.replace(key, bytes: bytes)
    }
    /// Creates whose answer is lost after the object is stored (a timeout on the way back).
    let loseCreateAnswers = Mutex(0)
    func create(_ key: String, bytes: [UInt8]) throws(RemoteError) -> Bool {
        try check(.replace, key)
        let created = try base.create(key, bytes: bytes)
        let lose = loseCreateAnswers.withLock { n -> Bool in
            defer { n = max(0, n - 1) }
            return n > 0
        }
        if lose { throw .unavailable(operation: "create", key: key, reason: "the answer was lost (test)") }
        return created
    }
    func get(_ key: String, limit: Int) throws(RemoteError) -> [UInt8]? {
        try check(.get, key)
        return try base.get(key, limit: limit)
    }
    func head(_ key: String) throws(RemoteError) -> ObjectHead? {
        try check(.get, key)
        return try base.head(key)
    }
    func list(prefix: String) throws(RemoteError) -> [String] {
        try check(.list, prefix)
        return try base.list(prefix: prefix)
    }
    func download(_ key: String, into fs: any FileSystem, path: String) throws(RemoteError) -> LocalObject? {
        try check(.get, key)
        downloads.withLock { $0[key, default: 0] += 1 }
        downloading.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
        defer { downloading.withLock { $0.now -= 1 } }
        if let delay = downloadDelay.withLock({ $0 }) { Thread.sleep(forTimeInterval: delay) }
        return try base.download(key, into: fs, path: path)
    }
    func verify(_ key: String, size: Int, crc32c: UInt32) throws(RemoteError) -> Bool {
        try check(.get, key)
        return try base.verify(key, size: size, crc32c: crc32c)
    }
    func delete(_ key: String) throws(RemoteError) {
        try check(.delete, key)
        beforeDelete.withLock { $0 }?(key)
        try base.delete(key)
    }
}

@Suite("Remote storage: uploads to a file:// store")
struct RemoteUploadTests {
    /// A remote directory and the tenant's prefix in it.
    struct Remote {
        let dir = TempDir("remote")
        var tenantDir: String { dir.path + "/tenants/\(testTenant)" }
        func store() throws -> FileRemoteStore { try FileRemoteStore(directory: dir.path) }
        func objects() -> Set<String> { Set(dir.files("tenants/\(testTenant)")) }
        func bytes(_ name: String) -> Data? { FileManager.default.contents(atPath: tenantDir + "/" + name) }
        func index(generation: UInt32) throws -> RemoteIndex {
            let key = RemoteIndex.key(testTenant, generation: generation)
            let data = try #require(FileManager.default.contents(atPath: dir.path + "/" + key), "no \(key)")
            return try RemoteIndex.decode(Array(data), key: key, tenant: testTenant)
        }
    }

    static func fast(_ c: inout TenantConfig) {
        c.remoteSyncPeriod = .milliseconds(50)
        c.remoteRetryDelay = .milliseconds(20)
        c.remoteMaxBackoff = .milliseconds(200)
    }

    /// The local index, and each listed layer's bytes equal to its remote object.
    func expectMirrored(_ f: TenantFixture, _ remote: Remote, _ t: Tenant) throws {
        let local = try IndexFile.read(directory: t.path)
        let index = try remote.index(generation: local.generation)
        #expect(index.layers.map(\.name) == local.layers.map(\.name))
        #expect(index.diskConsistentLsn == local.diskConsistentLsn)
        for layer in local.layers {
            let mine = FileManager.default.contents(atPath: t.path + "/" + layer.name)
            #expect(mine != nil && remote.bytes(layer.name) == mine, "object \(layer.name)")
        }
        let indexes = remote.objects().filter { $0.hasPrefix(RemoteIndex.namePrefix) }
        #expect(remote.objects().subtracting(indexes) == local.layerNames, "only listed layers stay in the store")
    }

    @Test func aListingRemovesTempFilesACrashedUploadLeftLongAgo() throws {
        let remote = Remote()
        let store = try remote.store()
        try FileManager.default.createDirectory(atPath: remote.tenantDir, withIntermediateDirectories: true)
        let old = remote.tenantDir + "/layer.___temp.999999.1"
        let fresh = remote.tenantDir + "/layer.___temp.999999.2"
        for path in [old, fresh] { try Data("half an upload".utf8).write(to: URL(fileURLWithPath: path)) }
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -2 * 3600)], ofItemAtPath: old)
        #expect(try store.list(prefix: RemoteIndex.prefix(testTenant)).isEmpty, "temp files are never listed")
        #expect(!FileManager.default.fileExists(atPath: old), "a temp file untouched for hours is a crash's leftover")
        #expect(FileManager.default.fileExists(atPath: fresh), "a recent one may be an upload in progress")
    }

    /// A file:// store holding one object, `objects/one`, of 100,000 bytes
    /// from a local file in `source`; the temp directories live as long as the values.
    func storedObject(_ label: String) throws -> (Remote, FileRemoteStore, LocalObject, TempDir) {
        let remote = Remote()
        let store = try remote.store()
        let source = TempDir(label)
        try Data(repeating: 5, count: 100_000).write(to: URL(fileURLWithPath: source.path + "/object"))
        let object = try LocalObject.measure(fs: testFS, path: source.path + "/object")
        #expect(try store.putIfAbsent("objects/one", from: object) == .created)
        return (remote, store, object, source)
    }

    /// A download whose fsync or write fails is dropped and reported, not the
    /// engine's stop on a failed fsync: nothing was published or acknowledged
    /// on it. The report blames this server's disk (`localIO`, INTERNAL on the
    /// wire), not the store (TENANT_UNAVAILABLE) nor a shortage.
    @Test(arguments: [SimulatedDisk.Operation.sync, .write])
    func aDownloadWhoseWriteOrFsyncFailsIsDroppedAndBlamesThisDisk(failing: SimulatedDisk.Operation) throws {
        let (remote, store, object, source) = try storedObject("fsync-source")
        defer { withExtendedLifetime((remote, source)) {} }
        let disk = SimulatedDisk()
        disk.inject(.init([failing], errno: EIO))
        do {
            _ = try store.download("objects/one", into: disk, path: "copy")
            Issue.record("the download succeeded")
        } catch {
            guard case .localIO(let op, let key, _) = error else { Issue.record("blamed elsewhere: \(error)"); return }
            #expect(op == "download" && key == "objects/one")
            #expect(error.description.contains("this server's own disk"), "\(error)")
        }
        #expect((try? disk.stat("copy")) == nil, "the unsynced copy is gone")
        disk.clearFaults()
        let copy = try #require(try store.download("objects/one", into: disk, path: "copy"))
        #expect(copy.size == object.size && copy.crc32c == object.crc32c)
    }

    /// A copy between the store and this server blames the side whose call
    /// failed: a store object that cannot be read (a directory in its place:
    /// EISDIR) or a store directory that refuses writes (read-only) is the
    /// store's (`unavailable`); a local layer that cannot be read is this
    /// server's disk (`localIO`).
    @Test func aCopyBlamesTheSideWhoseCallFailed() async throws {
        let (remote, store, object, source) = try storedObject("copy-sides")
        func side(_ body: () throws(RemoteError) -> Void) -> String {
            do throws(RemoteError) {
                try body()
                return "succeeded"
            } catch {
                switch error {
                case .unavailable: return "store"
                case .localIO: return "local"
                default: return "\(error)"
                }
            }
        }

        try FileManager.default.moveItem(atPath: remote.dir.path + "/objects/one", toPath: remote.dir.path + "/aside")
        try FileManager.default.createDirectory(atPath: remote.dir.path + "/objects/one", withIntermediateDirectories: false)
        #expect(side { () throws(RemoteError) in _ = try store.download("objects/one", into: SimulatedDisk(), path: "copy") } == "store")

        try FileManager.default.createDirectory(atPath: source.path + "/unreadable", withIntermediateDirectories: false)
        let unreadable = LocalObject(fs: testFS, path: source.path + "/unreadable", size: object.size, crc32c: object.crc32c)
        #expect(side { () throws(RemoteError) in _ = try store.putIfAbsent("objects/two", from: unreadable) } == "local")

        guard let readOnly = try await ReadOnlyBind.make(remote.dir.path, test: "aCopyBlamesTheSideWhoseCallFailed (read-only store)") else { return }
        defer { readOnly.release() }
        #expect(side { () throws(RemoteError) in _ = try store.putIfAbsent("objects/three", from: object) } == "store")
    }

    /// A layer whose local file goes while it is being uploaded (a
    /// compaction's GC removes what the new index replaced) makes the pass
    /// stale, so the next one takes the new index; it is not this server's
    /// disk failing (`localIO`), though the store's read of it failed here.
    @Test func aLayerRemovedWhileItIsUploadedIsStaleNotADiskFailure() async throws {
        let f = try await TenantFixture.make(label: "upload-gone")
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 40, flushEvery: 20)
        let index = try IndexFile.read(directory: f.tenant.path)
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        let upload = TenantUpload(tenant: testTenant, store: flaky, fs: testFS, directory: f.tenant.path,
                                  failpoints: Failpoints(), logger: quietLogger())
        let layer = f.tenant.path + "/" + (try #require(index.layers.first)).name
        flaky.beforePut.withLock { $0 = { _ in try? FileManager.default.moveItem(atPath: layer, toPath: layer + ".aside") } }
        do {
            let outcome = try upload.pass(index)
            guard case .stale(let name) = outcome else { Issue.record("\(outcome)"); return }
            #expect(layer.hasSuffix("/" + name))
        } catch {
            Issue.record("the pass failed: \(error)")
        }
        flaky.beforePut.withLock { $0 = nil }
        try FileManager.default.moveItem(atPath: layer + ".aside", toPath: layer)
        guard case .caughtUp = try upload.pass(index) else { Issue.record("the next pass did not catch up"); return }
        await f.manager.shutdown()
    }

    /// A detach whose uploads cannot catch up says whose fault that is, once:
    /// a store that is down, TENANT_UNAVAILABLE; this server with no
    /// descriptor left to read its layers with, RESOURCE_EXHAUSTED; a layer
    /// its own disk cannot read, INTERNAL. Then it works.
    @Test func aDetachHeldBackByTheServersOwnShortageSaysSo() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        flaky.failing.withLock { $0 = [.putIfAbsent] }
        let f = try await TenantFixture.make(label: "detach-shortage", remote: flaky) { c in
            Self.fast(&c)
            c.detachTimeout = .milliseconds(600)
        }
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        func detachFailure() async -> RemoteError? {
            do {
                _ = try await f.manager.detach(testTenant)
                Issue.record("the detach caught up")
            } catch {
                if case .remote(_, let r) = error { return r }
                Issue.record("\(error)")
            }
            return nil
        }
        guard case .unavailable(let op, _, _)? = await detachFailure() else { Issue.record("the store's failure"); return }
        #expect(op == "detach")
        try f.failpoints.configure("no-descriptors", .return)
        flaky.failing.withLock { $0 = [] }
        guard case .exhausted(let op, _, let reason)? = await detachFailure() else { Issue.record("the server's shortage"); return }
        #expect(op == "detach" && reason.contains("Too many open files"), "\(reason)")
        try f.failpoints.configure("no-descriptors", .off)

        // A layer this server cannot read (a directory where its file was: EISDIR): its own disk, INTERNAL.
        let layer = f.tenant.path + "/" + (try #require(try IndexFile.read(directory: f.tenant.path).layers.first)).name
        try FileManager.default.moveItem(atPath: layer, toPath: layer + ".aside")
        try FileManager.default.createDirectory(atPath: layer, withIntermediateDirectories: false)
        guard case .localIO(let op, _, let reason)? = await detachFailure() else { Issue.record("the server's disk"); return }
        #expect(op == "detach" && reason.contains("read local layer") && reason.contains("Is a directory"), "\(reason)")
        let told = RemoteError.localIO(operation: op, key: "k", reason: reason).description
        #expect(told.components(separatedBy: "this server's own disk").count == 2, "said once: \(told)")
        try FileManager.default.removeItem(atPath: layer)
        try FileManager.default.moveItem(atPath: layer + ".aside", toPath: layer)
        #expect(try await f.manager.detach(testTenant) == Lsn(60))
    }

    @Test func layersThenTheIndexAreUploadedAndReplacedLayersDeletedAfterTheNewIndex() async throws {
        let remote = Remote()
        let f = try await TenantFixture.make(label: "remote-up", remote: try remote.store(), configure: Self.fast)
        var model = PageModel()
        let end = try await ingest(f.tenant, &model, from: 1, count: 200, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        try expectMirrored(f, remote, f.tenant)
        let before = try IndexFile.read(directory: f.tenant.path)
        #expect(before.layers.count == 10)

        let compacted = try await f.tenant.compact()
        #expect(compacted.layersRemoved > 0)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        try expectMirrored(f, remote, f.tenant)
        for gone in before.layerNames.subtracting(try IndexFile.read(directory: f.tenant.path).layerNames) {
            #expect(remote.bytes(gone) == nil, "\(gone) was replaced by the compaction and must be deleted remotely")
        }
        let status = try #require(f.tenant.status().remote)
        #expect(status.layersPendingUpload == 0)
        #expect(status.remoteConsistentLsn == f.tenant.status().diskConsistentLsn)
        #expect(status.uploadFailures == 0 && status.lastUploadError == nil && status.fencedByGeneration == nil)
        await expectPagesMatch(f.tenant, model, lsns: [end - 1, 100])
        await f.manager.shutdown()
    }

    @Test func anUnacknowledgedUploadIsRetriedIdempotentlyAndOrphansAreDeletedAfterTheIndex() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        flaky.failing.withLock { $0 = [.replace] }  // layers go up, the index never does: a crash between the two
        let f = try await TenantFixture.make(label: "remote-retry", remote: flaky, configure: Self.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        let local = try IndexFile.read(directory: f.tenant.path)
        // Both: an object is in the store a moment before the upload loop counts it uploaded.
        try await waitFor("every layer is uploaded") {
            remote.objects().isSuperset(of: local.layerNames) && f.tenant.status().remote?.layersPendingUpload == 0
        }
        let lagging = try #require(f.tenant.status().remote)
        #expect(lagging.layersPendingUpload == 0)
        #expect(lagging.remoteConsistentLsn == nil, "no index was stored, so nothing is remote-consistent")
        try await waitFor("the failure is reported") { (f.tenant.status().remote?.uploadFailures ?? 0) > 0 }
        #expect(remote.objects().allSatisfy { !$0.hasPrefix(RemoteIndex.namePrefix) }, "no index lists what is not stored")

        // An object no index will list: an upload of a layer that a compaction then replaced, before a crash.
        let orphan = LayerName(kind: .delta, keys: KeyRange(first: key(0), last: key(1)), lsnStart: Lsn(1), lsnEnd: Lsn(2),
                               generation: local.generation).description
        try Data("orphan".utf8).write(to: URL(fileURLWithPath: remote.tenantDir + "/" + orphan))

        // The restart: a new generation finds its layers there already, with the same bytes.
        let (m, t) = try await f.reopen(remote: try remote.store())
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        try expectMirrored(f, remote, t)
        #expect(remote.bytes(orphan) == nil, "the orphan is deleted once an index that does not list it is stored")
        await m.shutdown()
    }

    @Test func anObjectWithOtherBytesUnderALayersNameIsNeverOverwritten() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        flaky.failing.withLock { $0 = [.list] }  // nothing moves until the squatter is in place
        let f = try await TenantFixture.make(label: "remote-conflict", remote: flaky, configure: Self.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 40, flushEvery: 20)
        let local = try IndexFile.read(directory: f.tenant.path)
        let victim = try #require(local.layers.first?.name)
        try FileManager.default.createDirectory(atPath: remote.tenantDir, withIntermediateDirectories: true)
        let squatter = Data(repeating: 0x5a, count: 8192)
        try squatter.write(to: URL(fileURLWithPath: remote.tenantDir + "/" + victim))
        flaky.failing.withLock { $0 = [] }
        try await waitFor("the conflict is reported") {
            f.tenant.status().remote?.lastUploadError?.contains("exists with other bytes") == true
        }
        #expect(remote.bytes(victim) == squatter, "the object that was there keeps its bytes")
        #expect(remote.objects().allSatisfy { !$0.hasPrefix(RemoteIndex.namePrefix) }, "no index lists a layer that is not ours")
        #expect(f.tenant.status().remote?.remoteConsistentLsn == nil)
        // A detach cannot finish until an operator acts: it says so at once instead of waiting out its timeout.
        let start = ContinuousClock.now
        do {
            _ = try await f.manager.detach(testTenant)
            Issue.record("a detach whose uploads cannot catch up must fail")
        } catch {
            #expect("\(error)".contains("other bytes"), "\(error)")
        }
        #expect(ContinuousClock.now - start < .seconds(10), "refused promptly")
        #expect(try f.manager.tenant(testTenant).lifecycle == .active, "the tenant stays")
        await expectPagesMatch(f.tenant, model, lsns: [40], keys: 30)
        await f.manager.shutdown()
    }

    @Test func aNewerGenerationsIndexStopsUploadsAndDeletions() async throws {
        let remote = Remote()
        let f = try await TenantFixture.make(label: "remote-fence", remote: try remote.store(), configure: Self.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 100, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        let generation = try IndexFile.read(directory: f.tenant.path).generation
        // Another server attached with the next generation: it wrote its own index.
        var newer = try remote.index(generation: generation)
        newer.generation = generation + 1
        let newerKey = RemoteIndex.key(testTenant, generation: generation + 1)
        try Data(newer.encoded()).write(to: URL(fileURLWithPath: remote.dir.path + "/" + newerKey))
        let snapshot = remote.objects().map { ($0, remote.bytes($0)) }

        _ = try await ingest(f.tenant, &model, from: 101, count: 40, flushEvery: 20)
        _ = try await f.tenant.compact()
        try await waitFor("the fence is reported") { f.tenant.status().remote?.fencedByGeneration == generation + 1 }
        try await Task.sleep(for: .milliseconds(300))  // several periods: nothing may move
        #expect(Dictionary(uniqueKeysWithValues: remote.objects().map { ($0, remote.bytes($0)) })
                == Dictionary(uniqueKeysWithValues: snapshot), "no object was written, replaced or deleted")
        #expect((f.tenant.status().remote?.layersPendingUpload ?? 0) > 0, "the lag shows")
        await expectPagesMatch(f.tenant, model, lsns: [140], keys: 30)
        await f.manager.shutdown()
    }

    @Test func aConflictingObjectOutlivesTheLayerItsNameBelongedTo() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        flaky.failing.withLock { $0 = [.list] }
        let f = try await TenantFixture.make(label: "remote-squat", remote: flaky, configure: Self.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        let layers = try IndexFile.read(directory: f.tenant.path).layers
        let (victim, second) = (layers[0].name, layers[2].name)
        try FileManager.default.createDirectory(atPath: remote.tenantDir, withIntermediateDirectories: true)
        let squatter = Data(repeating: 0x33, count: 4096)
        try squatter.write(to: URL(fileURLWithPath: remote.tenantDir + "/" + victim))
        // A second one, further on: the first conflict must not keep the pass from looking at it.
        try Data("short".utf8).write(to: URL(fileURLWithPath: remote.tenantDir + "/" + second))
        flaky.failing.withLock { $0 = [] }
        try await waitFor("the conflict is reported") {
            f.tenant.status().remote?.lastUploadError?.contains("exists with other bytes") == true
        }
        // The compaction replaces the layer whose name the squatter took: the squatter stays all the same.
        _ = try await f.tenant.compact()
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        #expect(remote.bytes(victim) == squatter, "an object the server refused to overwrite is never deleted either")
        #expect(remote.bytes(second) == Data("short".utf8), "nor is one after the first conflict")
        await f.manager.shutdown()
    }

    @Test func aNewerIndexWrittenDuringDeletionsStopsThemAtOnce() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        let f = try await TenantFixture.make(label: "remote-fence-race", remote: flaky, configure: Self.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 200, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        let generation = try IndexFile.read(directory: f.tenant.path).generation
        var newer = try remote.index(generation: generation)
        newer.generation = generation + 1
        let newerPath = remote.dir.path + "/" + RemoteIndex.key(testTenant, generation: generation + 1)
        let bytes = Data(newer.encoded())
        // The newer server writes its index (listing every current object) as the old one starts deleting.
        flaky.beforeDelete.withLock { $0 = { _ in if !FileManager.default.fileExists(atPath: newerPath) { try? bytes.write(to: URL(fileURLWithPath: newerPath)) } } }
        _ = try await f.tenant.compact()
        try await waitFor("the fence is reported") { f.tenant.status().remote?.fencedByGeneration == generation + 1 }
        #expect(flaky.calls.withLock { $0[.delete, default: 0] } == 1, "no delete after the one that found the newer index")
        let gone = newer.layers.filter { remote.bytes($0.name) == nil }
        #expect(gone.count <= 1, "only the delete already under way when the newer index appeared: \(gone.map(\.name))")
        await f.manager.shutdown()
    }

    @Test func aRestartUploadsAgainWhatTheStoreLostAndFollowsARecreatedDirectory() async throws {
        let remote = Remote()
        let f = try await TenantFixture.make(label: "remote-lost", remote: try remote.store(), configure: Self.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        let lost = try #require(try IndexFile.read(directory: f.tenant.path).layers.first?.name)
        try FileManager.default.removeItem(atPath: remote.tenantDir + "/" + lost)
        let (m, t) = try await f.reopen()
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        try expectMirrored(f, remote, t)
        #expect(remote.objects().filter { $0.hasPrefix(RemoteIndex.namePrefix) }.count == 1, "the superseded index is deleted")

        // The directory goes away and comes back (a remount): uploads resume into the new one.
        try FileManager.default.removeItem(atPath: remote.dir.path)
        _ = try await ingest(t, &model, from: 61, count: 20, flushEvery: 20)
        try await waitFor("the missing directory is reported") { t.status().remote?.lastUploadError != nil }
        try FileManager.default.createDirectory(atPath: remote.dir.path, withIntermediateDirectories: true)
        #expect(await t.waitUntilUploaded(timeout: .seconds(20)))
        try expectMirrored(f, remote, t)  // the old layers too: the new directory lacked them
        await m.shutdown()
    }

    @Test func anOutageLeavesIngestAndReadsAloneAndUploadsCatchUpAfterIt() async throws {
        let remote = Remote()
        let flaky = FlakyStore(try remote.store())
        flaky.failing.withLock { $0 = [.putIfAbsent, .replace, .get, .list, .delete] }
        let f = try await TenantFixture.make(label: "remote-outage", remote: flaky, configure: Self.fast)
        var model = PageModel()
        let end = try await ingest(f.tenant, &model, from: 1, count: 120, flushEvery: 20)
        _ = try await f.tenant.compact()
        await expectPagesMatch(f.tenant, model, lsns: [end - 1, 60])
        try await waitFor("the outage is reported") { (f.tenant.status().remote?.uploadFailures ?? 0) >= 2 }
        let down = try #require(f.tenant.status().remote)
        #expect(down.layersPendingUpload > 0 && down.remoteConsistentLsn == nil)
        #expect(down.lastUploadError?.contains("the store is down") == true)
        // Backing off: far fewer attempts than sync periods.
        let attempts = flaky.calls.withLock { $0[.list, default: 0] }
        try await Task.sleep(for: .milliseconds(500))
        #expect(flaky.calls.withLock { $0[.list, default: 0] } - attempts <= 5, "failed passes back off")

        flaky.failing.withLock { $0 = [] }
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(20)))
        try expectMirrored(f, remote, f.tenant)
        let up = try #require(f.tenant.status().remote)
        #expect(up.layersPendingUpload == 0 && up.uploadFailures == 0 && up.lastUploadError == nil)
        await f.manager.shutdown()
    }

    @Test func aFileStoreRefusesKeysThatLeaveItsDirectory() throws {
        let remote = Remote()
        let store = try remote.store()
        for bad in ["../x/y", "/etc/passwd", "tenants//x", "tenants/./x", "x"] {
            #expect(throws: RemoteError.self) { try store.replace(bad, bytes: [1]) }
        }
        #expect(throws: RemoteError.self) { _ = try RemoteStoreURL.open("file://relative/dir") }
        #expect(throws: RemoteError.self) { _ = try RemoteStoreURL.open("http://example.com") }
    }
}

/// Polls `condition` until it holds, or fails the test after `timeout`.
func waitFor(_ what: String, timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out waiting until \(what)")
}
