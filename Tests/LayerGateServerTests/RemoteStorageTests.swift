import Foundation
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
        #expect(try runCLI(s + ["create-tenant", tenantA]).0 == 0)
        #expect(try runCLI(s + ["put", tenantA, "--generate", "1500"]).0 == 0)
        #expect(try runCLI(s + ["compact", tenantA]).0 == 0)

        let client = try await server.client()
        let deadline = ContinuousClock.now + .seconds(30)
        var status = try await client.tenantStatus(tenantA)
        while ContinuousClock.now < deadline,
              status.layersPendingUpload > 0 || status.remoteConsistentLsn != status.diskConsistentLsn {
            try await Task.sleep(for: .milliseconds(50))
            status = try await client.tenantStatus(tenantA)
        }
        #expect(status.diskConsistentLsn > 0 && status.remoteConsistentLsn == status.diskConsistentLsn, "\(status)")
        #expect(status.layersPendingUpload == 0 && status.remoteUploadError.isEmpty, "\(status)")

        // The store holds exactly the listed layers, byte for byte, and the index of this generation.
        let objects = Set(remote.files("tenants/\(tenantA)"))
        let index = "index_part.json-" + String(format: "%08x", status.generation)
        #expect(objects == Set(status.layers.map(\.name)).union([index]), "\(objects)")
        for layer in status.layers {
            let local = FileManager.default.contents(atPath: "\(dir.data)/tenants/\(tenantA)/\(layer.name)")
            #expect(local != nil && local == FileManager.default.contents(atPath: "\(remote.path)/tenants/\(tenantA)/\(layer.name)"))
        }
        let (code, text, _) = try runCLI(s + ["status", tenantA])
        #expect(code == 0 && text.contains("remote: consistent up to \(status.diskConsistentLsn)") && text.contains("0 layers pending upload"),
                "\(text)")
        #expect(await server.stop() == 0)
    }

    @Test func aRemoteStorageURLItCannotUseStopsTheServerWithTheReason() throws {
        let dir = ServerDir()
        let p = Process()
        p.executableURL = try builtExecutable("layergated")
        p.arguments = ["--socket", dir.socket, "--data-dir", dir.data, "--remote-storage", "s3://bucket/prefix"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 2 && message.contains("no S3 client"), "\(message)")
    }
}
