@testable import LayerGateClient
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

    /// The timeout watches the calls still waiting, not abandoned requests the
    /// server holds: a connection whose only pending request was cancelled is
    /// not ended by it (before, it was, one timeout after that request was sent).
    @Test func abandonedRequestsDoNotRunTheTimeout() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await LayerGateClient.connect(socketPath: dir.socket, timeout: .seconds(1))
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 1)])
        let held = Task { try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 100, waitMs: 20_000) }
        try await Task.sleep(for: .milliseconds(100))
        held.cancel()
        #expect(Self.isCancelled(await within(.seconds(5)) { await held.result }))
        try await Task.sleep(for: .milliseconds(1_600))  // the server still holds it, and says nothing
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 1)
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1)).page == wpage(1 << 32 | 1))
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Work on a connection after its private loop was shut down (closing it,
    /// letting it go, cancelling a call) does not start the loop again: its
    /// thread would hold the loop and two descriptors until another shutdown.
    @Test func aShutDownLoopIsNotStartedAgainForItsConnections() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        var loops: [ClientLoop] = []
        for round in 0..<10 {
            let loop = ClientLoop()
            loops.append(loop)
            var c: LayerGateClient? = try await LayerGateClient.connect(socketPath: dir.socket, loop: loop)
            if round == 0 { try await c?.createTenant(tenantA) }
            let client = try #require(c)
            let held = Task { try await client.getPage(tenant: tenantA, key: wkey(1), lsn: 1_000, waitMs: 10_000) }
            try await Task.sleep(for: .milliseconds(50))
            await loop.shutdown()
            held.cancel()
            _ = await within(.seconds(5)) { await held.result }
            await client.close()
            c = nil
            _ = c
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(loops.filter(\.hasThread).count == 0, "shut-down loops started again")
        #expect(await server.stop() == 0)
    }
}
