import Foundation
import LayerGateStorage
import LayerGateTestSupport
import LayerGateWire
import Testing

/// The real layergated with a store (file:// and S3 on moto), killed where
/// the remote copy is half written (failpoint `exit`), restarted, and moved
/// to an empty disk.
@Suite("layergated remote storage: crashes and on-demand downloads", .serialized)
struct RemoteCrashTests {
    let blocks: UInt32 = 300

    enum Backend: String, CaseIterable, Sendable { case file, s3 }

    /// A store for one test: the server's flags and a look into what it holds.
    final class Store: @unchecked Sendable {
        let args: [String]
        let environment: [String: String]
        private let directory: TemporaryDirectory?
        private let moto: MotoServer?
        private let s3: S3RemoteStore?

        /// Nil when the backend cannot run here (moto missing: the test says why and skips).
        static func make(_ backend: Backend, _ label: String) async throws -> Store? {
            switch backend {
            case .file:
                let dir = TemporaryDirectory(label)
                return Store(args: ["--remote-storage", "file://" + dir.path], environment: [:], directory: dir, moto: nil, s3: nil)
            case .s3:
                guard let moto = try await MotoServer.start(test: label + " (s3)") else { return nil }
                let store = try moto.store(bucket: label, prefix: "lg")
                return Store(args: ["--remote-storage", "s3://\(label)/lg", "--s3-endpoint", moto.endpoint],
                             environment: ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"],
                             directory: nil, moto: moto, s3: store)
            }
        }

        private init(args: [String], environment: [String: String], directory: TemporaryDirectory?, moto: MotoServer?,
                     s3: S3RemoteStore?) {
            (self.args, self.environment, self.directory, self.moto, self.s3) = (args, environment, directory, moto, s3)
        }

        deinit { moto?.stop() }

        /// Object names under the tenant's prefix.
        func files() -> Set<String> {
            if let directory { return Set(directory.files("tenants/\(tenantA)")) }
            let prefix = "tenants/\(tenantA)/"
            return Set(((try? s3?.list(prefix: prefix)) ?? []).map { String($0.dropFirst(prefix.count)) })
        }

        func contents(_ name: String) -> Data? {
            if let directory { return FileManager.default.contents(atPath: "\(directory.path)/tenants/\(tenantA)/\(name)") }
            return (try? s3?.get("tenants/\(tenantA)/\(name)", limit: 1 << 30))?.map { Data($0) }
        }
    }

    /// The layers each remote index of the tenant lists, by index name.
    func remoteIndexes(_ remote: Store) throws -> [String: [String]] {
        var out: [String: [String]] = [:]
        for name in remote.files() where name.hasPrefix("index_part.json-") {
            let data = try #require(remote.contents(name))
            let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            out[name] = (json["layers"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        }
        return out
    }

    /// Every object each remote index of the tenant lists is in the store.
    func expectNoIndexListsAMissingObject(_ remote: Store, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let objects = remote.files()
        for (name, layers) in try remoteIndexes(remote) {
            for layer in layers { #expect(objects.contains(layer), "\(name) lists \(layer), which the store lacks", sourceLocation: sourceLocation) }
        }
    }

    /// Waits until the store holds exactly the tenant's listed layers and this generation's index.
    func waitUntilMirrored(_ server: ServerProcess, _ remote: Store) async throws -> Wire.TenantStatusResponse {
        let client = try await server.client()
        let deadline = ContinuousClock.now + .seconds(30)
        var status = try await client.tenantStatus(tenantA)
        while ContinuousClock.now < deadline {
            let index = "index_part.json-" + String(format: "%08x", status.generation)
            if status.layersPendingUpload == 0, status.remoteConsistentLsn == status.diskConsistentLsn,
               remote.files() == Set(status.layers.map(\.name)).union([index]) { break }
            try await Task.sleep(for: .milliseconds(50))
            status = try await client.tenantStatus(tenantA)
        }
        await client.close()
        return status
    }

    func pages(_ server: ServerProcess, lsn: UInt64?) async throws -> [Wire.GetPageResponse] {
        let client = try await server.client()
        var out: [Wire.GetPageResponse] = []
        for b in 0..<blocks { out.append(try await client.getPage(tenant: tenantA, key: wkey(b), lsn: lsn)) }
        await client.close()
        return out
    }

    func waitForExit(_ server: ServerProcess) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while server.process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return !server.process.isRunning
    }

    func layerFiles(_ dir: ServerDir) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(dir.data)/tenants/\(tenantA)")) ?? []).filter { $0.contains("__") && !$0.contains("___temp") }
    }

    @Test(arguments: Backend.allCases)
    func aCrashBetweenALayerUploadAndTheIndexIsRetriedIdempotently(_ backend: Backend) async throws {
        guard let remote = try await Store.make(backend, "crash-up") else { return }
        let dir = ServerDir()
        let args = remote.args + ["--checkpoint-distance-mib", "1", "--enable-failpoints"]
        let server = try await ServerProcess(dir: dir, extraArgs: args,
                                             environment: remote.environment.merging(["LAYERGATE_FAILPOINTS": "remote-after-layer-upload=exit"]) { $1 })
        let s = ["--socket", dir.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        _ = try await runCLI(s + ["put", tenantA, "--generate", "600", "--keys", "\(blocks)"])  // the server may die meanwhile
        #expect(await waitForExit(server), "the first layer upload stops the process")
        let uploaded = remote.files().filter { !$0.hasPrefix("index_part") }
        #expect(!uploaded.isEmpty, "a layer object was stored before the crash")
        #expect(try remoteIndexes(remote).values.allSatisfy { Set($0).isDisjoint(with: uploaded) }, "no index lists it yet")
        try expectNoIndexListsAMissingObject(remote)

        let again = try await ServerProcess(dir: dir, extraArgs: Array(args.dropLast()), environment: remote.environment)
        let status = try await waitUntilMirrored(again, remote)
        #expect(status.remoteConsistentLsn == status.diskConsistentLsn && status.layersPendingUpload == 0, "\(status)")
        #expect(status.remoteUploadError.isEmpty, "the object stored before the crash is the same bytes: no conflict (\(status.remoteUploadError))")
        try expectNoIndexListsAMissingObject(remote)
        for name in uploaded where status.layers.contains(where: { $0.name == name }) {
            #expect(FileManager.default.contents(atPath: "\(dir.data)/tenants/\(tenantA)/\(name)") == remote.contents(name), "\(name)")
        }
        #expect(await again.stop() == 0)
    }

    @Test(arguments: Backend.allCases)
    func aCrashDuringRemoteDeletionLeavesOrphansThatTheRestartDeletes(_ backend: Backend) async throws {
        guard let remote = try await Store.make(backend, "crash-del") else { return }
        let dir = ServerDir()
        let args = remote.args + ["--checkpoint-distance-mib", "1", "--enable-failpoints"]
        let server = try await ServerProcess(dir: dir, extraArgs: args, environment: remote.environment)
        let s = ["--socket", dir.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        #expect(try await runCLI(s + ["put", tenantA, "--generate", "900", "--keys", "\(blocks)"]).0 == 0)
        let before = try await waitUntilMirrored(server, remote)
        #expect(before.layers.count >= 2, "\(before.layers.map(\.name))")
        let want = try await pages(server, lsn: before.diskConsistentLsn)
        #expect(try await runCLI(s + ["failpoint", "remote-before-delete", "exit"]).0 == 0)
        _ = try await runCLI(s + ["compact", tenantA])
        #expect(await waitForExit(server), "the first remote deletion after the compaction stops the process")
        try expectNoIndexListsAMissingObject(remote)
        let orphans = Set(before.layers.map(\.name)).intersection(remote.files())
        #expect(!orphans.isEmpty, "the replaced layers' objects were still there at the crash")

        let again = try await ServerProcess(dir: dir, extraArgs: Array(args.dropLast()), environment: remote.environment)
        let status = try await waitUntilMirrored(again, remote)
        let index = "index_part.json-" + String(format: "%08x", status.generation)
        #expect(remote.files() == Set(status.layers.map(\.name)).union([index]),
                "orphans and the older index are deleted once the new index is stored")
        try expectNoIndexListsAMissingObject(remote)
        #expect(try await pages(again, lsn: before.diskConsistentLsn) == want)
        #expect(await again.stop() == 0)
    }

    @Test(arguments: Backend.allCases)
    func aLostHostsTenantIsAttachedOnAnEmptyDiskAndServedThroughDownloads(_ backend: Backend) async throws {
        guard let remote = try await Store.make(backend, "lost-host") else { return }
        let args = remote.args + ["--checkpoint-distance-mib", "1"]
        let first = ServerDir()
        let server = try await ServerProcess(dir: first, extraArgs: args, environment: remote.environment)
        var s = ["--socket", first.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        #expect(try await runCLI(s + ["put", tenantA, "--generate", "1200", "--keys", "\(blocks)"]).0 == 0)
        #expect(try await runCLI(s + ["compact", tenantA]).0 == 0)
        let status = try await waitUntilMirrored(server, remote)
        let want = try await pages(server, lsn: status.remoteConsistentLsn)
        #expect(await server.stop(SIGKILL) != 0)  // the host is lost, not shut down
        try FileManager.default.removeItem(atPath: first.data)

        let second = ServerDir()
        let moved = try await ServerProcess(dir: second, extraArgs: args + ["--local-layer-budget-mib", "1"],
                                            environment: remote.environment)
        s = ["--socket", second.socket]
        let (code, out, err) = try await runCLI(s + ["attach", tenantA, "\(status.generation + 1)"])
        #expect(code == 0, "\(out)\(err)")
        #expect(layerFiles(second).isEmpty, "attach downloads nothing before a read needs it")
        #expect(try await pages(moved, lsn: nil) == want, "every page, through on-demand downloads")
        let client = try await moved.client()
        #expect(try await client.tenantStatus(tenantA).lastRecordLsn == status.remoteConsistentLsn)
        await client.close()
        #expect(await moved.stop() == 0)
    }
}
