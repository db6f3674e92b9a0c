import Foundation
import Glibc
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Testing

/// The real layergated with `--remote-storage file:///DIR`: what it flushes
/// and compacts reaches the store, and `status` shows how far behind it is.
@Suite("layergated with remote storage", .serialized)
struct RemoteStorageTests {
    @Test func flushedAndCompactedLayersReachTheStoreAndStatusShowsTheLagClosing() async throws {
        let dir = ServerDir()
        let remote = TemporaryDirectory("remote-server")
        let server = try await ServerProcess(dir: dir, extraArgs: [
            "--remote-storage", "file://" + remote.path, "--checkpoint-distance-mib", "1", "--compaction-threshold", "4",
        ])
        let s = ["--socket", dir.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        #expect(try await runCLI(s + ["put", tenantA, "--generate", "1500"]).0 == 0)
        #expect(try await runCLI(s + ["compact", tenantA]).0 == 0)

        let client = try await server.client()
        let deadline = ContinuousClock.now + .seconds(30)
        var status = try await client.tenantStatus(tenantA)
        let index = "index_part.json-" + String(format: "%08x", status.generation)
        // Caught up: the index covers the disk, and the objects it no longer lists are deleted.
        while ContinuousClock.now < deadline,
              status.layersPendingUpload > 0 || status.remoteConsistentLsn != status.diskConsistentLsn
                || Set(remote.files("tenants/\(tenantA)")) != Set(status.layers.map(\.name)).union([index]) {
            try await Task.sleep(for: .milliseconds(50))
            status = try await client.tenantStatus(tenantA)
        }
        #expect(status.diskConsistentLsn > 0 && status.remoteConsistentLsn == status.diskConsistentLsn, "\(status)")
        #expect(status.layersPendingUpload == 0 && status.remoteUploadError.isEmpty, "\(status)")

        // The store holds exactly the listed layers, byte for byte, and the index of this generation.
        let objects = Set(remote.files("tenants/\(tenantA)"))
        #expect(objects == Set(status.layers.map(\.name)).union([index]), "\(objects)")
        for layer in status.layers {
            let local = FileManager.default.contents(atPath: "\(dir.data)/tenants/\(tenantA)/\(layer.name)")
            #expect(local != nil && local == FileManager.default.contents(atPath: "\(remote.path)/tenants/\(tenantA)/\(layer.name)"))
        }
        let (code, text, _) = try await runCLI(s + ["status", tenantA])
        #expect(code == 0 && text.contains("remote: consistent up to \(status.diskConsistentLsn)") && text.contains("0 layers pending upload"),
                "\(text)")
        #expect(await server.stop() == 0)
    }

    @Test func aTenantSurvivesItsDiskDetachAndAttachThroughTheCLI() async throws {
        let remote = TemporaryDirectory("remote-move")
        try await moveThroughTheStore(["--remote-storage", "file://" + remote.path])
    }

    @Test func theSameThroughS3() async throws {
        guard let moto = try await MotoServer.start(test: "layergated with s3://") else { return }
        _ = try moto.store(bucket: "layergate-move")
        try await moveThroughTheStore(["--remote-storage", "s3://layergate-move/servers", "--s3-endpoint", moto.endpoint],
                                      environment: ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"])
        moto.stop()
    }

    /// Ingest, detach, lose the disk; a second server attaches the next generation and serves the same pages.
    func moveThroughTheStore(_ remoteArgs: [String], environment: [String: String] = [:]) async throws {
        let args = remoteArgs + ["--checkpoint-distance-mib", "1"]
        let first = ServerDir()
        var server = try await ServerProcess(dir: first, extraArgs: args, environment: environment)
        var s = ["--socket", first.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        #expect(try await runCLI(s + ["put", tenantA, "--generate", "600"]).0 == 0)
        let client = try await server.client()
        let before = try await client.tenantStatus(tenantA)
        var pages: [Wire.GetPageResponse] = []
        for block in stride(from: UInt32(0), to: 600, by: 37) {
            pages.append(try await client.getPage(tenant: tenantA, key: Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: block), lsn: nil))
        }
        let (code, out, err) = try await runCLI(s + ["--json", "detach", tenantA])
        #expect(code == 0 && out.contains("\"remote_consistent_lsn\":\(before.lastRecordLsn)"), "\(out)\(err)")
        #expect(try await runCLI(s + ["status", tenantA]).0 != 0, "a detached tenant is gone from the server")
        #expect(await server.stop() == 0)
        try FileManager.default.removeItem(atPath: first.data)  // and so is its disk

        let second = ServerDir()
        server = try await ServerProcess(dir: second, extraArgs: args, environment: environment)
        s = ["--socket", second.socket]
        let (acode, aout, aerr) = try await runCLI(s + ["attach", tenantA, "\(before.generation + 1)"])
        #expect(acode == 0 && aout.contains("generation \(before.generation + 1)"), "\(aout)\(aerr)")
        let moved = try await server.client()
        let after = try await moved.tenantStatus(tenantA)
        #expect(after.lastRecordLsn == before.lastRecordLsn && after.state == "active")
        var i = 0
        for block in stride(from: UInt32(0), to: 600, by: 37) {
            let got = try await moved.getPage(tenant: tenantA, key: Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: block), lsn: nil)
            #expect(got == pages[i], "block \(block)")
            i += 1
        }
        // A tenant the store does not hold is refused, with the reason.
        let (rcode, _, rerr) = try await runCLI(s + ["attach", "fedcba9876543210fedcba9876543210", "3"])
        #expect(rcode != 0 && rerr.contains("no remote index"), "\(rerr)")
        #expect(await server.stop() == 0)
    }

    /// A layer that must come back from the store onto a data directory out
    /// of inodes (a real tmpfs mounted with few: bytes to spare, so the
    /// download is admitted, and its file cannot be made). That is this
    /// server's shortage, not the store's: RESOURCE_EXHAUSTED, which says so
    /// and names no path; once there is room the same read works.
    @Test(arguments: ["file", "s3"])
    func aDownloadOntoADataDirectoryOutOfInodesIsTheServersShortage(store: String) async throws {
        let dir = ServerDir()
        guard let tmpfs = MountedTmpfs.mount(at: dir.path + "/tmpfs", size: "512m", inodes: 200,
                                             test: "aDownloadOntoADataDirectoryOutOfInodesIsTheServersShortage") else { return }
        defer {
            tmpfs.unmount()
            withExtendedLifetime(dir) {}
        }
        let remote = TemporaryDirectory("remote-inodes")
        var args = ["--remote-storage", "file://" + remote.path]
        var environment: [String: String] = [:]
        var moto: MotoServer?
        if store == "s3" {
            guard let m = try await MotoServer.start(test: "a download onto a full data directory through s3://") else { return }
            _ = try m.store(bucket: "layergate-inodes")
            args = ["--remote-storage", "s3://layergate-inodes/servers", "--s3-endpoint", m.endpoint]
            environment = ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"]
            moto = m
        }
        defer { moto?.stop() }
        let data = tmpfs.path + "/data"
        let server = try await ServerProcess(dir: dir, extraArgs: args + ["--local-layer-budget-mib", "1", "--checkpoint-distance-mib", "1"],
                                             environment: environment, dataDir: data)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        for start in stride(from: UInt64(0), to: 1200, by: 40) {
            _ = try await c.putRecords(tenant: tenantA, (1...40 as ClosedRange<UInt64>).map { wimage(UInt32((start + $0) % 100), start + $0) })
        }
        _ = try await c.compact(tenant: tenantA, forceImageLayers: true)
        // Uploaded, then evicted (a pass a second): no layer file is left here.
        let tenantDir = data + "/tenants/" + tenantA
        let deadline = ContinuousClock.now + .seconds(30)
        var status = try await c.tenantStatus(tenantA)
        func localLayers() -> [String] {
            let here = Set((try? FileManager.default.contentsOfDirectory(atPath: tenantDir)) ?? [])
            return status.layers.map(\.name).filter(here.contains)
        }
        while ContinuousClock.now < deadline, status.remoteConsistentLsn != status.lastRecordLsn || !localLayers().isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            status = try await c.tenantStatus(tenantA)
        }
        #expect(localLayers().isEmpty && !status.layers.isEmpty, "every layer evicted: \(status)")
        // Something else takes every inode left.
        var fillers = 0
        while FileManager.default.createFile(atPath: tmpfs.path + "/filler-\(fillers)", contents: nil) { fillers += 1 }
        #expect(fillers > 0)
        var refusals = 0
        for block in 0..<5 as Range<UInt32> {
            do {
                _ = try await c.getPage(tenant: tenantA, key: wkey(block))
            } catch let ClientError.server(code, message) {
                #expect(code == .resourceExhausted, "\(message)")
                #expect(message.contains("this server is short of") && !message.contains(dir.path), "\(message)")
                refusals += 1
            }
        }
        #expect(refusals == 5, "no read could bring its layer back")
        for i in 0..<fillers { unlink(tmpfs.path + "/filler-\(i)") }
        let last = status.lastRecordLsn
        for block in 0..<5 as Range<UInt32> {
            let lsn = (last - UInt64(block)) / 100 * 100 + UInt64(block)  // the block's last image
            let got = try await c.getPage(tenant: tenantA, key: wkey(block))
            #expect(got.page == wpage(UInt64(block) << 32 | lsn), "block \(block)")
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    @Test func aRemoteStorageURLItCannotUseStopsTheServerWithTheReason() async throws {
        let dir = ServerDir()
        var env = ProcessInfo.processInfo.environment
        env["AWS_ACCESS_KEY_ID"] = nil
        env["AWS_SECRET_ACCESS_KEY"] = nil
        let run = try await runToExit(try builtExecutable("layergated").path,
                                      ["--socket", dir.socket, "--data-dir", dir.data, "--remote-storage", "s3://bucket/prefix"],
                                      environment: env)
        let message = run.stderr
        #expect(run.status == 2 && message.contains("AWS_ACCESS_KEY_ID"), "\(message)")
    }
}
