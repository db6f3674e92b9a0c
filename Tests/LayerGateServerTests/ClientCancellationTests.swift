import LayerGateClient
import LayerGateWire
import Testing

/// An async call whose task is cancelled fails with `cancelled` at once,
/// even while the server still holds its request, and the connection goes
/// on: the answer that comes later is dropped, not taken for one nobody
/// waits for (which ends a connection).
@Suite("cancelled async calls", .serialized)
struct ClientCancellationTests {
    static func isCancelled<T>(_ r: Result<T, any Error>?) -> Bool {
        if case .failure(let e as ClientError)? = r, e == .cancelled { return true }
        return false
    }

    @Test func aCancelledCallFailsAtOnceAndItsLateAnswerIsDropped() async throws {
        let server = try await ServerProcess(dir: ServerDir())
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 1)])
        // LSN 100 is not there yet: the server holds the request for up to 20 s.
        let waiting = Task { try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 100, waitMs: 20_000) }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        waiting.cancel()
        let outcome = await within(.seconds(5)) { await waiting.result }
        #expect(Self.isCancelled(outcome), "\(String(describing: outcome))")
        #expect(ContinuousClock.now - start < .seconds(2))

        // Now the server answers the abandoned request; the connection must go on.
        try await c.putRecords(tenant: tenantA, [wimage(2, 100)])
        try await Task.sleep(for: .milliseconds(300))
        for _ in 0..<3 {
            #expect(try await c.getPage(tenant: tenantA, key: wkey(1)).page == wpage(1 << 32 | 1))
            #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 100)
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// In a batch, what was answered before the cancellation keeps its answer;
    /// the rest are `cancelled`. A task cancelled before its call sends nothing.
    @Test func aCancelledBatchKeepsItsAnswersAndACancelledTaskSendsNothing() async throws {
        let server = try await ServerProcess(dir: ServerDir())
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 1)])
        let now = Wire.Request.Body.getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 1, latest: false, waitMs: 0))
        let later = Wire.Request.Body.getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 500, latest: false, waitMs: 20_000))
        let batch = Task { await c.callMany([now, later, now]) }
        try await Task.sleep(for: .milliseconds(300))
        batch.cancel()
        let results = await within(.seconds(5)) { await batch.value }
        #expect(results?.count == 3)
        if let results {
            if case .success(.getPage(let p)) = results[0] { #expect(p.page == wpage(1 << 32 | 1)) } else { Issue.record("\(results[0])") }
            #expect(results[1] == .failure(.cancelled))
            if case .success = results[2] {} else { Issue.record("\(results[2])") }
        }

        // Cancelled before it calls: fails at once, though the request would wait 20 s.
        let early = Task {
            while !Task.isCancelled { await Task.yield() }
            return await c.callMany([later, later])
        }
        early.cancel()
        #expect(await within(.seconds(5)) { await early.value } == [.failure(.cancelled), .failure(.cancelled)])
        // Two tasks awaiting one Pending: the cancelled one abandons it for both.
        let pending = c.send(later)
        let first = Task { try await pending.response() }
        let second = Task { try await pending.response() }
        try await Task.sleep(for: .milliseconds(200))
        first.cancel()
        #expect(Self.isCancelled(await within(.seconds(5)) { await first.result }))
        #expect(Self.isCancelled(await within(.seconds(5)) { await second.result }))
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 1)
        await c.close()
        #expect(await server.stop() == 0)
    }
}
