import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// The remote-storage scenarios against a real S3 endpoint: moto on loopback,
/// started and stopped by each test. Each starts with a probe: a second
/// `If-None-Match: *` PUT of one key must get 412, or the test fails (a store
/// that cannot gate would make every other check here meaningless).
@Suite("Remote storage: S3 (moto)", .serialized)
struct S3RemoteTests {
    /// A started moto with a probed bucket, and a way to look into it.
    struct Endpoint {
        let moto: MotoServer
        let store: S3RemoteStore
        var tenantPrefix: String { RemoteIndex.prefix(testTenant) }

        static func start(_ test: String, bucket: String) async throws -> Endpoint? {
            guard let moto = try await MotoServer.start(test: test) else { return nil }
            let store = try moto.store(bucket: bucket)
            let probeDir = TempDir("s3-probe")
            let path = probeDir.path + "/probe"
            try Data("probe".utf8).write(to: URL(fileURLWithPath: path))
            let object = try LocalObject.measure(fs: testFS, path: path)
            #expect(try store.putIfAbsent("probe/once", from: object) == .created)
            let second = try store.putIfAbsent("probe/once", from: object)
            #expect(second == .sameExists, "the endpoint must refuse a second If-None-Match PUT with 412")
            guard second == .sameExists else { return nil }
            return Endpoint(moto: moto, store: store)
        }

        func objects() throws -> Set<String> {
            Set(try store.list(prefix: tenantPrefix).map { String($0.dropFirst(tenantPrefix.count)) })
        }

        func bytes(_ name: String) throws -> [UInt8]? { try store.get(tenantPrefix + name, limit: 64 << 20) }

        func index(generation: UInt32) throws -> RemoteIndex {
            let key = RemoteIndex.key(testTenant, generation: generation)
            return try RemoteIndex.decode(try #require(try store.get(key, limit: 1 << 20)), key: key, tenant: testTenant)
        }

        /// The local index's layers are in the store byte for byte, nothing else is, and the index lists them.
        func expectMirrored(_ t: Tenant) throws {
            let local = try IndexFile.read(directory: t.path)
            #expect(try index(generation: local.generation).layers.map(\.name) == local.layers.map(\.name))
            for layer in local.layers {
                let mine = FileManager.default.contents(atPath: t.path + "/" + layer.name).map { [UInt8]($0) }
                let theirs = try bytes(layer.name)
                #expect(mine != nil && theirs == mine, "object \(layer.name)")
            }
            let all = try objects()
            #expect(all.filter { !$0.hasPrefix(RemoteIndex.namePrefix) } == local.layerNames)
        }
    }

    /// The shim's own write of a downloaded object failing for want of space
    /// (into /dev/full, which answers every write with ENOSPC) is this
    /// server's shortage; the same GET into a file works, so the store is fine.
    @Test func aDownloadWhoseLocalWriteFindsNoSpaceIsTheServersShortage() async throws {
        guard let endpoint = try await Endpoint.start("a download into a full disk", bucket: "lg-full") else { return }
        defer { endpoint.moto.stop() }
        let dir = TempDir("s3-full")
        let path = dir.path + "/object"
        try Data(repeating: 7, count: 256 << 10).write(to: URL(fileURLWithPath: path))
        #expect(try endpoint.store.putIfAbsent("full/object", from: LocalObject.measure(fs: testFS, path: path)) == .created)
        let url = endpoint.moto.endpoint + "/lg-full/lg/full/object"
        let signing = HTTPExchange.Signing(sigv4: "aws:amz:us-east-1:s3", userpwd: "testing:testing")
        func get(into target: String) throws(RemoteError) -> Int {
            let fd = open(target, O_WRONLY | O_CREAT, 0o600)
            defer { close(fd) }
            return try HTTPExchange.perform("GET", url, signing: signing, headers: [], into: fd).status
        }
        #expect(try get(into: dir.path + "/copy") == 200)
        do {
            _ = try get(into: "/dev/full")
            Issue.record("a download into /dev/full succeeded")
        } catch {
            guard case .exhausted(_, _, let reason) = error else { Issue.record("the store was blamed: \(error)"); return }
            #expect(reason.contains("No space left on device"), "\(reason)")
        }
    }

    @Test func layersAndIndexGoUpAndAFreshServerAttachesFromThem() async throws {
        guard let s3 = try await Endpoint.start("S3 upload and attach", bucket: "attach") else { return }
        let f = try await TenantFixture.make(label: "s3-up", remote: s3.store, configure: RemoteUploadTests.fast)
        var model = PageModel()
        var end = try await ingest(f.tenant, &model, from: 1, count: 200, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(30)))
        let before = try IndexFile.read(directory: f.tenant.path).layerNames
        _ = try await f.tenant.compact()
        end = try await ingest(f.tenant, &model, from: end, count: 20, flushEvery: 20)
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(30)))
        try s3.expectMirrored(f.tenant)
        for gone in before.subtracting(try IndexFile.read(directory: f.tenant.path).layerNames) {
            #expect(try s3.bytes(gone) == nil, "\(gone) was replaced and must be deleted after the new index")
        }
        let generation = f.tenant.status().generation
        await f.manager.shutdown()

        let disk = TempDir("s3-attach")
        var config = TenantConfig()
        RemoteUploadTests.fast(&config)
        let m = try TenantManager(dataDirectory: disk.path, config: config, cache: PageCache(capacity: 1024),
                                  failpoints: Failpoints(), remote: s3.store, logger: quietLogger())
        let (t, _) = try await m.attach(testTenant, generation: generation + 1)
        await expectPagesMatch(t, model, lsns: [end - 1, 150, 60])
        let lsn = try await m.detach(testTenant)
        #expect(lsn == Lsn(end - 1))
        await m.shutdown()
    }

    @Test func evictedLayersComeBackFromS3AndADamagedObjectIsRefused() async throws {
        guard let s3 = try await Endpoint.start("S3 eviction", bucket: "evict") else { return }
        let (f, model, end) = try await RemoteEvictionTests().uploadedTenant("s3-evict", store: s3.store, images: true)
        let t = f.tenant
        #expect(f.manager.evictLayers().localBytes == 0)
        #expect(f.layerFiles().isEmpty)
        await expectPagesMatch(t, model, lsns: [end - 1, 150, 60])
        #expect(!f.layerFiles().isEmpty, "read back from the store")
        for name in f.layerFiles() {
            #expect(FileManager.default.contents(atPath: t.path + "/" + name).map { [UInt8]($0) } == (try s3.bytes(name)))
        }

        // Damage one object in the store (a plain PUT over it), evict again: its reads fail, never serve it.
        #expect(f.manager.evictLayers().localBytes == 0)
        let victim = try #require(t.status().layers.first { $0.isImage }?.name)
        var bad = try #require(try s3.bytes(victim))
        bad[bad.count / 2] ^= 0x5a
        try s3.store.replace(s3.tenantPrefix + victim, bytes: bad)
        var refused = 0
        for b in 0..<30 as Range<UInt32> {
            switch await readResult(t, key(b), Lsn(end - 1)) {
            case .success(let got): #expect(got == model.page(key(b), at: Lsn(end - 1)))
            case .failure(.corruptLayer(let file, _)) where file.hasSuffix(victim): refused += 1
            case .failure(.pageNotFound) where model.page(key(b), at: Lsn(end - 1)) == nil: break
            case .failure(let e): Issue.record("\(key(b)): \(e)")
            }
        }
        #expect(refused > 0)
        #expect(!f.layerFiles().contains(victim))
        await f.manager.shutdown()
    }

    /// Scenario 3 on S3: generation g keeps ingesting and compacting after g+1 attached elsewhere.
    @Test func anOlderGenerationStillRunningNeverTouchesTheNewerOnesObjects() async throws {
        guard let s3 = try await Endpoint.start("S3 two generations", bucket: "generations") else { return }
        let old = try await TenantFixture.make(label: "s3-gen-old", remote: s3.store, configure: RemoteUploadTests.fast)
        var model = PageModel()
        var end = try await ingest(old.tenant, &model, from: 1, count: 100, flushEvery: 20)
        #expect(await old.tenant.waitUntilUploaded(timeout: .seconds(30)))
        let g = old.tenant.status().generation

        let disk = TempDir("s3-gen-new")
        var config = TenantConfig()
        RemoteEvictionTests.evicting(budget: 0)(&config)
        let m = try TenantManager(dataDirectory: disk.path, config: config, cache: PageCache(capacity: 64),
                                  failpoints: Failpoints(), remote: s3.store, logger: quietLogger())
        let (new, _) = try await m.attach(testTenant, generation: g + 1)
        var newModel = model
        let newEnd = try await ingest(new, &newModel, from: end, count: 40, flushEvery: 20, seed: 7)
        #expect(await new.waitUntilUploaded(timeout: .seconds(30)))
        var newer: [String: [UInt8]] = [:]
        for name in try s3.objects() {
            let mine = name.hasPrefix(RemoteIndex.namePrefix) ? name.hasSuffix(String(format: "%08x", g + 1))
                : LayerName(parsing: name)?.generation == g + 1
            if mine { newer[name] = try s3.bytes(name) }
        }
        #expect(newer.count >= 2)

        end = try await ingest(old.tenant, &model, from: end, count: 80, flushEvery: 20, seed: 3)
        _ = try await old.tenant.compact()
        try await waitFor("the old server sees the newer generation") { old.tenant.status().remote?.fencedByGeneration == g + 1 }
        try await Task.sleep(for: .milliseconds(300))
        for (name, bytes) in newer { #expect(try s3.bytes(name) == bytes, "\(name) of generation \(g + 1) is untouched") }
        for layer in try s3.index(generation: g + 1).layers { #expect(try s3.bytes(layer.name) != nil, "\(layer.name) is listed by the newer index") }
        // The newer server serves through downloads: its local files go, and every page comes back right.
        #expect(m.evictLayers().localBytes == 0)
        await expectPagesMatch(new, newModel, lsns: [newEnd - 1, 50])
        await m.shutdown()
        await old.manager.shutdown()
    }

    @Test func anObjectWithOtherBytesIsNeverOverwrittenAndARetryIsIdempotent() async throws {
        guard let s3 = try await Endpoint.start("S3 conflict", bucket: "conflict") else { return }
        let flaky = FlakyStore(s3.store)
        flaky.failing.withLock { $0 = [.list] }
        let f = try await TenantFixture.make(label: "s3-conflict", remote: flaky, configure: RemoteUploadTests.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 60, flushEvery: 20)
        let local = try IndexFile.read(directory: f.tenant.path)
        // One layer already there with our bytes (an upload whose answer was lost), one with other bytes.
        let (same, other) = (local.layers[0].name, local.layers[1].name)
        let mine = try LocalObject.measure(fs: testFS, path: f.tenant.path + "/" + same)
        #expect(try s3.store.putIfAbsent(s3.tenantPrefix + same, from: mine) == .created)
        let squatterFile = f.dir.path + "/squatter"
        try Data(repeating: 0x5a, count: 8192).write(to: URL(fileURLWithPath: squatterFile))
        let squatter = try LocalObject.measure(fs: testFS, path: squatterFile)
        #expect(try s3.store.putIfAbsent(s3.tenantPrefix + other, from: squatter) == .created)
        flaky.failing.withLock { $0 = [] }
        try await waitFor("the conflict is reported") {
            f.tenant.status().remote?.lastUploadError?.contains("exists with other bytes") == true
        }
        #expect(try s3.bytes(other) == [UInt8](repeating: 0x5a, count: 8192), "the object that was there keeps its bytes")
        #expect(try s3.bytes(same) == FileManager.default.contents(atPath: f.tenant.path + "/" + same).map { [UInt8]($0) })
        #expect(try s3.objects().allSatisfy { !$0.hasPrefix(RemoteIndex.namePrefix) }, "no index lists a layer that is not ours")
        await f.manager.shutdown()
    }

    @Test func anOutageBacksOffAndCatchesUp() async throws {
        guard let s3 = try await Endpoint.start("S3 outage", bucket: "outage") else { return }
        let flaky = FlakyStore(s3.store)
        flaky.failing.withLock { $0 = [.putIfAbsent, .replace, .get, .list, .delete] }
        let f = try await TenantFixture.make(label: "s3-outage", remote: flaky, configure: RemoteUploadTests.fast)
        var model = PageModel()
        let end = try await ingest(f.tenant, &model, from: 1, count: 100, flushEvery: 20)
        await expectPagesMatch(f.tenant, model, lsns: [end - 1])
        try await waitFor("the outage shows") { (f.tenant.status().remote?.layersPendingUpload ?? 0) > 0
            && (f.tenant.status().remote?.uploadFailures ?? 0) > 0 }
        flaky.failing.withLock { $0 = [] }
        #expect(await f.tenant.waitUntilUploaded(timeout: .seconds(30)))
        try s3.expectMirrored(f.tenant)
        await f.manager.shutdown()
    }

    @Test func theEndpointGoingAwayIsReportedWhileIngestAndReadsGoOn() async throws {
        guard let s3 = try await Endpoint.start("S3 endpoint down", bucket: "down") else { return }
        let endpoint = s3.moto.endpoint
        s3.moto.stop()
        let store = try S3RemoteStore(bucket: "down", prefix: "lg", endpoint: endpoint, region: "us-east-1",
                                      credentials: .init(accessKeyId: "testing", secretAccessKey: "testing"))
        #expect(throws: RemoteError.self) { _ = try store.list(prefix: "tenants/") }
        let f = try await TenantFixture.make(label: "s3-down", remote: store, configure: RemoteUploadTests.fast)
        var model = PageModel()
        _ = try await ingest(f.tenant, &model, from: 1, count: 40, flushEvery: 20)
        try await waitFor("the refused connection is reported") {
            f.tenant.status().remote?.lastUploadError?.contains("LIST") == true
                || f.tenant.status().remote?.lastUploadError?.contains("connect") == true
        }
        await expectPagesMatch(f.tenant, model, lsns: [40])
        await f.manager.shutdown()
    }
}
