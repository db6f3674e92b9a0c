import Foundation
import LayerGateClient
import LayerGateWire
import Testing

@Suite("layergated over a real socket", .serialized)
struct ServerTests {
    @Test func everyRequestTypeEndToEnd() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--enable-failpoints"])
        let c = try await server.client()
        try await c.createTenant(tenantA.uppercased())
        #expect(try await c.listTenants() == [tenantA])
        #expect(try await c.putRecords(tenant: tenantA, [wimage(1, 10), wimage(2, 10)]) == 10)
        let delta = Wire.Record(key: wkey(1), lsn: 11, value: .delta(Wire.DeltaRecord(willInit: false, patches: [
            Wire.Patch(offset: 100, data: [0xEE, 0xFF]),
        ])))
        #expect(try await c.putRecords(tenant: tenantA, [delta]) == 11)
        let at10 = try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 10)
        #expect(at10.page == wpage(1 << 32 | 10) && at10.lsn == 10)
        var expected = wpage(1 << 32 | 10)
        expected[100] = 0xEE
        expected[101] = 0xFF
        let latest = try await c.getPage(tenant: tenantA, key: wkey(1))
        #expect(latest.page == expected && latest.lsn == 11)
        let compact = try await c.compact(tenant: tenantA, forceImageLayers: true)
        #expect(compact.layersCreated >= 1)
        let status = try await c.tenantStatus(tenantA)
        #expect(status.state == "active" && status.lastRecordLsn == 11 && status.diskConsistentLsn == 11)
        #expect(status.layers.contains { $0.isImage } && status.compactionFailures == 0)
        let reset = try await c.resetTenant(tenantA, dropCache: true)
        #expect(reset.generation == status.generation + 1)
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 11).page == expected)
        try await c.configureFailpoints([Wire.Failpoint(name: "index-before-rename", action: "off")])
        let s = try await c.serverStatus()
        #expect(s.pageCacheCapacity == 16 * 128 && s.requests >= 10 && s.connections >= 1 && !s.version.isEmpty)
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Invariant 8 over a real socket: each bad input gets a clear error,
    /// stored data is untouched, and the server keeps serving.
    @Test func badInputGetsClearErrorsAndChangesNothing() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--max-frame-mib", "1"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let unknown = "ffffffffffffffffffffffffffffffff"
        await expectServerError(.invalidArgument) { try await c.createTenant("not-hex") }
        await expectServerError(.tenantExists) { try await c.createTenant(tenantA) }
        await expectServerError(.invalidArgument) { try await c.getPage(tenant: "xyz", key: wkey(1)) }
        await expectServerError(.tenantNotFound) { try await c.getPage(tenant: unknown, key: wkey(1)) }
        await expectServerError(.pageNotFound) { try await c.getPage(tenant: tenantA, key: wkey(99), lsn: 10) }
        await expectServerError(.lsnNotAvailable) { try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 50, waitMs: 50) }
        await expectServerError(.invalidArgument) {
            try await c.putRecords(tenant: tenantA, [Wire.Record(key: wkey(1), lsn: 20, value: .image([1, 2, 3]))])
        }
        await expectServerError(.invalidArgument) { try await c.putRecords(tenant: tenantA, [wimage(1, 5)]) }  // LSN backwards
        await expectServerError(.invalidArgument) { try await c.putRecords(tenant: tenantA, []) }
        await expectServerError(.invalidArgument) {
            try await c.putRecords(tenant: tenantA, [Wire.Record(key: Wire.PageKey(spcOid: 1, dbOid: 1, relNumber: 1, fork: 256, block: 1),
                                                                 lsn: 20, value: .image(wpage(1)))])
        }
        await expectServerError(.invalidArgument) {
            try await c.putRecords(tenant: tenantA, [Wire.Record(key: wkey(1), lsn: 20, value: .delta(Wire.DeltaRecord(
                willInit: false, patches: [Wire.Patch(offset: UInt32.max - 1, data: [1, 2, 3])])))])
        }
        await expectServerError(.invalidArgument) { try await c.putRecords(tenant: tenantA, [Wire.Record(key: nil, lsn: 20, value: nil)]) }
        await expectServerError(.permissionDenied) { try await c.configureFailpoints([]) }  // not enabled
        // A Request without a body: INVALID_ARGUMENT, and the connection stays usable.
        let raw = try RawConnection(dir.socket)
        raw.send(Wire.frame(Wire.encode(Wire.Request(requestId: 77, body: nil))))
        let noBody = try Wire.decodeResponse(#require(raw.readFrame()))
        #expect(noBody.requestId == 77)
        guard case .error(let e)? = noBody.body else { Issue.record("expected an error"); return }
        #expect(e.code == .invalidArgument)
        raw.send(Wire.frame(Wire.encode(Wire.Request(requestId: 78, body: .listTenants(Wire.ListTenantsRequest())))))
        #expect(try Wire.decodeResponse(#require(raw.readFrame())).requestId == 78)
        // Garbage: INVALID_ARGUMENT with request id 0, then the connection closes.
        let garbage = try RawConnection(dir.socket)
        garbage.send(Wire.frame([0xFF, 0xFF, 0xFF]))
        let g = try Wire.decodeResponse(#require(garbage.readFrame()))
        #expect(g.requestId == 0 && g.body.map { if case .error(let e) = $0 { e.code == .invalidArgument } else { false } } == true)
        #expect(garbage.isClosed())
        // A frame larger than --max-frame-mib: FRAME_TOO_LARGE, id 0, closed; exactly the maximum is fine.
        let big = try RawConnection(dir.socket)
        big.send([0x00, 0x10, 0x00, 0x01])
        let tooLarge = try Wire.decodeResponse(#require(big.readFrame()))
        #expect(tooLarge.requestId == 0 && tooLarge.body.map { if case .error(let e) = $0 { e.code == .frameTooLarge } else { false } } == true)
        #expect(big.isClosed())
        // Stored data is untouched and the server still serves.
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 10).page == wpage(1 << 32 | 10))
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 10)
        await c.close()
        #expect(await server.stop() == 0)
    }

    @Test func twoHundredPipelinedRequestsOnOneConnection() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        for lsn in 1...50 as ClosedRange<UInt64> { try await c.putRecords(tenant: tenantA, [wimage(UInt32(lsn), lsn)]) }
        _ = try await c.compact(tenant: tenantA)  // on disk now: the first reads miss, later ones hit
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let b = UInt32(i % 50 + 1)
                    let p = try await c.getPage(tenant: tenantA, key: wkey(b), lsn: 50)
                    #expect(p.page == wpage(UInt64(b) << 32 | UInt64(b)))
                }
            }
            try await group.waitForAll()
        }
        let s = try await c.serverStatus()
        #expect(s.pageCacheHits > 0 && s.pageCacheMisses > 0)
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A client that sends requests and never reads: the server stops reading
    /// from it (its socket fills and writes would block) instead of buffering
    /// responses without bound, and keeps serving everyone else.
    @Test func aClientThatNeverReadsIsHeldBack() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let greedy = try RawConnection(dir.socket)
        let request = Wire.frame(Wire.encode(Wire.Request(requestId: 1, body: .getPage(
            Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 10)))))
        var sent = 0, stalls = 0
        let deadline = ContinuousClock.now + .seconds(20)
        // Keep sending until the socket stays full: the server has stopped reading.
        while stalls < 50 && ContinuousClock.now < deadline {
            let n = greedy.sendNonBlocking(request)
            if n == 0 {
                stalls += 1
                try await Task.sleep(for: .milliseconds(10))
            } else {
                stalls = 0
                sent += n
            }
        }
        #expect(stalls >= 50, "the server kept reading")
        // Each request asks for 8 KiB; unbounded buffering would have taken every byte we offered.
        let requests = sent / request.count
        #expect(requests < 20_000, "\(requests) requests accepted from a client that reads nothing")
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 10).page == wpage(1 << 32 | 10))
        await c.close()
        #expect(await server.stop(SIGKILL) != 0)
    }

    @Test func sigtermFinishesInFlightRequestsAndRemovesTheSocket() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        // In flight when SIGTERM arrives: a read that waits 500 ms for an LSN that never comes.
        let waiting = Task { () -> Wire.ErrorCode? in
            do {
                _ = try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 20, waitMs: 500)
                return nil
            } catch let ClientError.server(code, _) {
                return code
            } catch {
                return .unspecified
            }
        }
        try await Task.sleep(for: .milliseconds(150))
        kill(server.process.processIdentifier, SIGTERM)
        // It is answered (not cut off) before the server exits.
        #expect(await waiting.value == .lsnNotAvailable)
        #expect(await server.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: dir.socket))
        await c.close()
    }

    @Test func aSecondServerOnTheSameSocketRefusesToStart() async throws {
        let dir = ServerDir()
        let first = try await ServerProcess(dir: dir)
        let second = Process()
        second.executableURL = try builtExecutable("layergated")
        second.arguments = ["--socket", dir.socket, "--data-dir", dir.path + "/data2"]
        let err = Pipe()
        second.standardError = err
        try second.run()
        second.waitUntilExit()
        #expect(second.terminationStatus != 0)
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("refusing to start"))
        // The first still serves; a stale socket file (no server) is replaced.
        let c = try await first.client()
        #expect(try await c.listTenants().isEmpty)
        await c.close()
        #expect(await first.stop(SIGKILL) != 0)
        #expect(FileManager.default.fileExists(atPath: dir.socket))  // stale now
        let third = try await ServerProcess(dir: dir)
        #expect(await third.stop() == 0)
    }
}
