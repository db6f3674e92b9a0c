import Foundation
import LayerGateClient
import LayerGateWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Layer files damaged on disk while the server is stopped, as a failing
/// disk leaves them, read back through the real layergated: every read of a
/// damaged image is refused INTERNAL, naming the tenant and the layer (no
/// path); every other read returns its bytes; and the operator reads about
/// it in the server's log, at most a line a second however many reads fail
/// (an outside run found the log silent at every level).
@Suite("Damaged layer files, through the server", .serialized)
struct DamagedLayerTests {
    static let keys: UInt32 = 400
    static let logLine = "a request was answered INTERNAL"

    @Test(arguments: ["buffered", "direct"])
    func damagedPagesAreRefusedAndTheLogSaysSo(layerReads: String) async throws {
        let dir = ServerDir()
        let args = ["--compaction-period-s", "3600", "--layer-reads", layerReads]
        let server = try await ServerProcess(dir: dir, extraArgs: args)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        for start in stride(from: UInt32(0), to: Self.keys, by: 50) {
            _ = try await c.putRecords(tenant: tenantA, (start..<start + 50).map { wimage($0, UInt64($0) + 1) })
        }
        _ = try await c.compact(tenant: tenantA, forceImageLayers: true)
        await c.close()
        #expect(await server.stop() == 0)

        // One byte flipped in every other block of the first half of each layer file: block 0 is the
        // summary and the index sits at the end, so these are images (one to a block in format 2).
        let tenantDir = dir.data + "/tenants/" + tenantA
        var flipped = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: tenantDir) where name.contains("__") {
            // Close-on-exec: servers other tests spawn meanwhile must not inherit it.
            let fd = open(tenantDir + "/" + name, O_RDWR | O_CLOEXEC)
            try #require(fd >= 0)
            defer { close(fd) }
            let blocks = Int(lseek(fd, 0, SEEK_END)) / 8192
            for block in stride(from: 2, to: blocks / 2, by: 2) {
                var byte: UInt8 = 0
                let at = off_t(block * 8192 + 4000)
                guard pread(fd, &byte, 1, at) == 1 else { continue }
                byte ^= 0xFF
                #expect(pwrite(fd, &byte, 1, at) == 1)
                flipped += 1
            }
        }
        #expect(flipped >= 20, "too few blocks to damage: \(flipped)")

        let again = try await ServerProcess(dir: dir, extraArgs: args)
        let r = try await again.client()
        var refused: [UInt32] = []
        let started = ContinuousClock.now
        for key in 0..<Self.keys {
            do {
                let got = try await r.getPage(tenant: tenantA, key: wkey(key))
                #expect(got.page == wpage(UInt64(key) << 32 | (UInt64(key) + 1)), "key \(key): wrong bytes served")
            } catch ClientError.server(let code, let message) {
                #expect(code == .internal && message.contains("corrupt layer file") && message.contains(tenantA), "\(message)")
                #expect(!message.contains(dir.path), "a path in the client's message: \(message)")
                refused.append(key)
            }
        }
        let elapsed = ContinuousClock.now - started
        #expect(refused.count >= flipped / 2, "only \(refused.count) reads refused for \(flipped) damaged blocks")
        let first = again.log.components(separatedBy: Self.logLine).count - 1
        #expect(first >= 1, "the log does not say: \(again.log)")
        #expect(first <= Int(elapsed.components.seconds) + 2, "\(first) lines for \(refused.count) refusals in \(elapsed)")

        // A second later, the same damage again: one more line, which says how many were left out.
        try await Task.sleep(for: .milliseconds(1100))
        if let key = refused.first {
            await expectServerError(.internal) { try await r.getPage(tenant: tenantA, key: wkey(key)) }
        }
        await r.close()
        let log = again.log
        #expect(log.components(separatedBy: Self.logLine).count - 1 == first + 1)
        #expect(log.contains("not_logged_since_last"), "\(log)")
        #expect(log.contains("corrupt layer file"), "\(log)")
        #expect(await again.stop() == 0)
    }
}
