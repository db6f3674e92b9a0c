import Foundation
import LayerGateClient
import LayerGateWire
import Testing

/// Puts on one connection are applied in the order they were sent, however
/// many are in flight (the contract's ordering rule). Before it held, one-record
/// puts pipelined on one connection, with a second connection polling
/// TenantStatus, were refused as "LSN … is not above the last record LSN".
@Suite("pipelined puts over a real socket", .serialized)
struct PipelinedPutTests {
    @Test func aThousandPipelinedPutsAreAllAcceptedInOrder() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        let poller = try await server.client()
        let polling = Task {
            var polls = 0
            while !Task.isCancelled {
                _ = try await poller.tenantStatus(tenantA)
                polls += 1
            }
            return polls
        }
        var lsn: UInt64 = 0
        for round in 0..<3 {
            // All 1,000 are sent before the first answer is awaited.
            var pending: [(LayerGateClient.Pending, UInt64)] = []
            for _ in 0..<1000 {
                lsn += 1
                pending.append((c.send(.putRecords(Wire.PutRecordsRequest(tenantId: tenantA, records: [wimage(UInt32(lsn % 50), lsn)]))), lsn))
            }
            var refused: [String] = []
            for (p, sentLsn) in pending {
                do {
                    guard case .putRecords(let r) = try await p.response() else { throw ClientError.unexpectedResponse("not a put") }
                    // Applied in order and durable: the tenant's last record LSN in the answer is at
                    // least this put's own (puts in flight together share a group commit, and its LSN).
                    if r.lastRecordLsn < sentLsn || r.lastRecordLsn > lsn {
                        refused.append("put \(sentLsn) answered \(r.lastRecordLsn)")
                    }
                } catch {
                    refused.append("put \(sentLsn): \(error)")
                }
            }
            #expect(refused.isEmpty, "round \(round): \(refused.count) of 1000: \(refused.prefix(3))")
            #expect(try await c.tenantStatus(tenantA).lastRecordLsn == lsn)
        }
        polling.cancel()
        #expect(try await polling.value > 0, "the second connection polled meanwhile")
        // Every block holds its newest record.
        for block in 0..<50 as Range<UInt32> {
            let newest = lsn - (lsn + 50 - UInt64(block)) % 50
            #expect(try await c.getPage(tenant: tenantA, key: wkey(block)).page == wpage(UInt64(block) << 32 | newest), "block \(block)")
        }
        await poller.close()
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// `layergate put --pipeline` keeps puts in flight and lands every record.
    @Test func theCLIPipelinesPuts() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        let (code, out, err) = try runCLI(["put", tenantA, "--generate", "2000", "--batch", "8", "--pipeline", "32",
                                           "--socket", dir.socket, "--json"])
        #expect(code == 0, "\(err)")
        #expect(out.contains("2000"), "\(out)")
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 2000)
        await c.close()
        #expect(await server.stop() == 0)
    }
}
