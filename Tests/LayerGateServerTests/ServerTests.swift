import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Synchronization
import Testing

@Suite("layergated over a real socket", .serialized)
struct ServerTests {
    /// Both event loops (`--event-loop`) run the same protocol: these tests run on each.
    static let eventLoops = ["epoll", "nio"]

    @Test(arguments: eventLoops) func everyRequestTypeEndToEnd(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--enable-failpoints", "--event-loop", eventLoop])
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

    /// Invariant 7 over a real socket: each bad input gets a clear error,
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
        let noBody = try Wire.decodeResponse(#require(await raw.readFrame()))
        #expect(noBody.requestId == 77)
        guard case .error(let e)? = noBody.body else { Issue.record("expected an error"); return }
        #expect(e.code == .invalidArgument)
        raw.send(Wire.frame(Wire.encode(Wire.Request(requestId: 78, body: .listTenants(Wire.ListTenantsRequest())))))
        #expect(try Wire.decodeResponse(#require(await raw.readFrame())).requestId == 78)
        // Garbage: INVALID_ARGUMENT with request id 0, then the connection closes.
        let garbage = try RawConnection(dir.socket)
        garbage.send(Wire.frame([0xFF, 0xFF, 0xFF]))
        let g = try Wire.decodeResponse(#require(await garbage.readFrame()))
        #expect(g.requestId == 0 && g.body.map { if case .error(let e) = $0 { e.code == .invalidArgument } else { false } } == true)
        #expect(await garbage.isClosed())
        // A frame larger than --max-frame-mib: FRAME_TOO_LARGE, id 0, closed; exactly the maximum is fine.
        let big = try RawConnection(dir.socket)
        big.send([0x00, 0x10, 0x00, 0x01])
        let tooLarge = try Wire.decodeResponse(#require(await big.readFrame()))
        #expect(tooLarge.requestId == 0 && tooLarge.body.map { if case .error(let e) = $0 { e.code == .frameTooLarge } else { false } } == true)
        #expect(await big.isClosed())
        // Stored data is untouched and the server still serves.
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 10).page == wpage(1 << 32 | 10))
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 10)
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// The grace period bounds a graceful shutdown: peers that keep requests
    /// in flight without a pause hold the server that long at most. (It waited
    /// for the in-flight count to reach zero, so such peers held it until they stopped.)
    @Test func peersThatNeverPauseHoldShutdownOnlyForTheGracePeriod() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--enable-failpoints"])
        let admin = try await server.client()
        try await admin.createTenant(tenantA)
        // Every WAL commit takes 200 ms; each peer keeps 8 puts in flight, a new one as soon as one is answered.
        try await admin.configureFailpoints([Wire.Failpoint(name: "wal-before-fsync", action: "sleep(200)")])
        var busy: [Task<Int, Never>] = []
        let progress = AnswerCount()
        for peer in 0..<2 as Range<UInt64> {
            let c = try await server.client()
            busy.append(Task {
                var window: [LayerGateClient.Pending] = []
                var answered = 0
                var lsn = peer << 32
                while !Task.isCancelled {
                    lsn += 1
                    window.append(c.send(.putRecords(Wire.PutRecordsRequest(tenantId: tenantA, records: [wimage(UInt32(peer), lsn)]))))
                    guard window.count >= 8 else { continue }
                    do { _ = try await window.removeFirst().response() } catch ClientError.server { } catch { break }
                    answered += 1
                    progress.count.add(1, ordering: .relaxed)
                }
                await c.close()
                return answered
            })
        }
        // Both peers going (not a fixed wait: on a loaded machine they may take a while to start).
        let ready = ContinuousClock.now + .seconds(30)
        while progress.count.load(ordering: .relaxed) < 8 && ContinuousClock.now < ready {
            try await Task.sleep(for: .milliseconds(20))
        }
        let start = ContinuousClock.now
        let code = await server.stop()
        let took = ContinuousClock.now - start
        var answered = 0
        for t in busy {
            t.cancel()
            answered += await t.value
        }
        #expect(answered >= 8, "the peers kept puts in flight")
        #expect(took < .seconds(14), "stopped \(took) after SIGTERM; the grace period is 8 s")
        #expect(code == 0, "\(server.log)")
        await admin.close()
    }

    /// The data path's thread carries its name into the kernel, where `top -H`,
    /// `perf` and /proc show it (set through Foundation before its start, it
    /// never got there: the thread showed as a dispatch queue's).
    @Test(.enabled(if: !(ProcessInfo.processInfo.environment["LAYERGATE_SERVER_ARGS"] ?? "").contains("nio"),
                   "LAYERGATE_SERVER_ARGS runs the server on SwiftNIO, which has no data path thread"))
    func theDataPathThreadIsNamed() async throws {
        let server = try await ServerProcess(dir: ServerDir())
        let tasks = "/proc/\(server.process.processIdentifier)/task"
        let names = try FileManager.default.contentsOfDirectory(atPath: tasks).compactMap {
            try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(names.filter { $0 == "layergated-data" }.count == 1, "\(names)")
        #expect(await server.stop() == 0)
    }

    /// `--busy-poll-us` keeps the loop polling only just after events: it
    /// serves as usual, and once idle it sleeps (a server that polled for
    /// ever would use a whole core here); values past 10 ms are refused.
    @Test func busyPollServesThenSleeps() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--busy-poll-us", "10000"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        for _ in 0..<200 { #expect(try await c.getPage(tenant: tenantA, key: wkey(1)).page == wpage(1 << 32 | 10)) }
        try await Task.sleep(for: .milliseconds(100))  // past the polling window
        let cpu0 = try ResourceBoundTests.cpuSeconds(server)
        try await Task.sleep(for: .seconds(2))
        let idle = try ResourceBoundTests.cpuSeconds(server) - cpu0
        #expect(idle < 0.3, "an idle server with --busy-poll-us used \(idle) s of CPU in 2 s")
        await c.close()
        #expect(await server.stop() == 0)
        for bad in ["20000", "-1"] {
            let refused = await #expect(throws: StartFailure.self) {
                _ = try await ServerProcess(dir: ServerDir(), extraArgs: ["--busy-poll-us", bad])
            }
            #expect(refused?.log.contains("--busy-poll-us must be 0...10000, not \(bad)") == true, "\(bad): \(refused?.log ?? "")")
        }
    }

    /// A size or a duration too large to turn into bytes or nanoseconds, or
    /// below its least, is refused with its name. Before, `--idle-timeout-s`, `--frame-timeout-s`,
    /// `--compaction-period-s` and `--page-cache-mib` at Int.max trapped (at the
    /// first check, the first compaction timer, or at start), and `--max-frame-mib`
    /// wrapped to a limit that refused every frame; a page cache larger than
    /// the machine aborted its allocation.
    @Test(arguments: ["--page-cache-mib", "--checkpoint-distance-mib", "--compaction-target-mib", "--gc-horizon-mib",
                      "--disk-reserve-mib", "--max-inflight-mib", "--max-frame-mib", "--compaction-period-s",
                      "--idle-timeout-s", "--frame-timeout-s", "--wait-lsn-timeout-ms", "--max-wait-lsn-ms"])
    func valuesTooLargeToRepresentAreRefusedByName(flag: String) async throws {
        let refused = await #expect(throws: StartFailure.self) {
            _ = try await ServerProcess(dir: ServerDir(), extraArgs: [flag, String(Int.max)])
        }
        #expect(refused?.log.contains("\(flag) must be at most") == true, "\(refused?.log ?? "")")
        let negative = await #expect(throws: StartFailure.self) {
            _ = try await ServerProcess(dir: ServerDir(), extraArgs: [flag, "-1"])
        }
        #expect(["\(flag) must be at least 1", "\(flag) must not be negative"].contains { negative?.log.contains($0) == true },
                "\(negative?.log ?? "")")
        if flag == "--page-cache-mib" {
            let tooMuch = await #expect(throws: StartFailure.self) {
                _ = try await ServerProcess(dir: ServerDir(), extraArgs: [flag, "1073741824"])
            }
            #expect(tooMuch?.log.contains("MiB of memory") == true, "\(tooMuch?.log ?? "")")
        }
    }

    /// A signed mode was taken as octal: "-0" made a socket nobody but root could use.
    @Test(arguments: ["-0", "+600", "800", "1000", "6 0"])
    func aSocketModeThatIsNotOctalDigitsIsRefused(mode: String) async throws {
        let refused = await #expect(throws: StartFailure.self) {
            _ = try await ServerProcess(dir: ServerDir(), extraArgs: ["--socket-mode=\(mode)"])
        }
        #expect(refused?.log.contains("--socket-mode must be octal permission bits") == true, "\(refused?.log ?? "")")
    }

    @Test(arguments: eventLoops) func twoHundredPipelinedRequestsOnOneConnection(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop])
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
        // A slow request (waiting 5 s for an LSN) does not hold up the hits queued behind it:
        // they are all answered while it still waits.
        let slowDone = Mutex(false)
        let slow = Task {
            _ = try? await c.getPage(tenant: tenantA, key: wkey(1), lsn: 999, waitMs: 5000)
            slowDone.withLock { $0 = true }
        }
        try await Task.sleep(for: .milliseconds(50))
        for b in 1...20 as ClosedRange<UInt32> { _ = try await c.getPage(tenant: tenantA, key: wkey(b), lsn: 50) }
        #expect(!slowDone.withLock { $0 }, "hits waited behind the slow read")
        _ = await slow.value
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A client that sends requests and never reads: the server stops reading
    /// from it (its socket fills and writes would block) instead of buffering
    /// responses without bound, and keeps serving everyone else. When it
    /// reads at last, every request it got in is answered, whole and once
    /// (the answers the server could not send at once are sent as
    /// the socket drains).
    /// A client that sends everything and then shuts its sending side
    /// (`shutdown(SHUT_WR)`) still reads every answer: one waiting for its
    /// LSN, which arrives only after the shutdown, and many run in tasks. The
    /// half frame it left can never complete and gets no answer; then the
    /// server closes.
    @Test(arguments: eventLoops) func aClientThatShutsItsSendingSideGetsEveryAnswer(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let raw = try RawConnection(dir.socket)
        var bytes = Wire.frame(Wire.encode(Wire.Request(requestId: 1, body: .getPage(
            Wire.GetPageRequest(tenantId: tenantA, key: wkey(2), lsn: 20, waitMs: 10_000)))))
        for id in 2...100 {
            bytes += Wire.frame(Wire.encode(Wire.Request(requestId: UInt64(id), body: .tenantStatus(Wire.TenantStatusRequest(tenantId: tenantA)))))
        }
        let half = Wire.frame(Wire.encode(Wire.Request(requestId: 101, body: .listTenants(Wire.ListTenantsRequest()))))
        bytes += half.prefix(half.count / 2)
        raw.send(bytes)
        #expect(shutdown(raw.fd, Int32(SHUT_WR)) == 0)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await c.putRecords(tenant: tenantA, [wimage(2, 20)]) == 20)
        var answered = Set<UInt64>()
        while let frame = await raw.readFrame() {
            let answer = try Wire.decodeResponse(frame)
            #expect(answered.insert(answer.requestId).inserted, "request \(answer.requestId) answered twice")
            switch answer.body {
            case .getPage(let p)?: #expect(answer.requestId == 1 && p.page == wpage(2 << 32 | 20) && p.lsn == 20)
            case .tenantStatus(let s)?: #expect(s.lastRecordLsn >= 10)
            default: Issue.record("unexpected answer \(answer)")
            }
        }
        #expect(answered == Set(1...100), "\(100 - answered.count) of 100 answers lost")
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Pages answered inline (images from memory, a page built with a delta),
    /// errors, and answers written by tasks, all in one stream to a client
    /// that reads late and slowly, so the server's sends stop part-way
    /// through pages. Every answer arrives whole, once, with its own page.
    @Test(arguments: eventLoops) func pagesArriveWholeBetweenOtherAnswersToASlowReader(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, (1...41 as ClosedRange<UInt32>).map { wimage($0, 10) })
        try await c.putRecords(tenant: tenantA, [Wire.Record(key: wkey(41), lsn: 11, value: .delta(Wire.DeltaRecord(
            willInit: false, patches: [Wire.Patch(offset: 100, data: [0xEE, 0xFF])])))])
        var built = wpage(41 << 32 | 10)
        built[100] = 0xEE
        built[101] = 0xFF
        enum Expected { case page([UInt8], UInt64), notFound, status }
        var expected: [UInt64: Expected] = [:]
        var bytes: [UInt8] = []
        for id in 1...600 as ClosedRange<UInt64> {
            let body: Wire.Request.Body
            switch id {
            case _ where id % 10 == 0:
                body = .tenantStatus(Wire.TenantStatusRequest(tenantId: tenantA))
                expected[id] = .status
            case _ where id % 10 == 5:
                body = .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(99), latest: true))
                expected[id] = .notFound
            case _ where id % 7 == 0:
                body = .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(41), latest: true))
                expected[id] = .page(built, 11)
            default:
                let block = UInt32(id % 40 + 1)
                body = .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(block), lsn: 10))
                expected[id] = .page(wpage(UInt64(block) << 32 | 10), 10)
            }
            bytes += Wire.frame(Wire.encode(Wire.Request(requestId: id, body: body)))
        }
        let raw = try RawConnection(dir.socket)
        raw.sendAllInBackground(bytes)  // the reader below drains it
        try await Task.sleep(for: .milliseconds(500))  // let the server's socket buffer fill
        var answered = Set<UInt64>()
        while answered.count < 600, let frame = await raw.readFrame() {
            let answer = try Wire.decodeResponse(frame)
            #expect(answered.insert(answer.requestId).inserted, "request \(answer.requestId) answered twice")
            switch (expected[answer.requestId], answer.body) {
            case (.page(let page, let lsn)?, .getPage(let p)?):
                #expect(p.page == page && p.lsn == lsn, "request \(answer.requestId): the wrong page or LSN")
            case (.notFound?, .error(let e)?): #expect(e.code == .pageNotFound)
            case (.status?, .tenantStatus?): break
            default: Issue.record("request \(answer.requestId): unexpected answer \(String(describing: answer.body).prefix(200))")
            }
            if answered.count % 50 == 0 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(answered == Set(1...600), "\(600 - answered.count) of 600 answers missing")
        await c.close()
        #expect(await server.stop() == 0)
    }

    @Test(arguments: eventLoops) func aClientThatNeverReadsIsHeldBack(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let greedy = try RawConnection(dir.socket)
        func request(_ id: Int) -> [UInt8] {
            Wire.frame(Wire.encode(Wire.Request(requestId: UInt64(id), body: .getPage(
                Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 10)))))
        }
        var sent = 0, stalls = 0, whole = 0
        var pending: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(20)
        // Keep sending until the socket stays full: the server has stopped reading.
        while stalls < 50 && ContinuousClock.now < deadline {
            if pending.isEmpty {
                whole += 1
                pending = request(whole)
            }
            let n = greedy.sendNonBlocking(pending)
            if n == 0 {
                stalls += 1
                try await Task.sleep(for: .milliseconds(10))
            } else {
                stalls = 0
                sent += n
                pending.removeFirst(n)
            }
        }
        if !pending.isEmpty { whole -= 1 }  // the last request did not get in whole: it is never answered
        #expect(stalls >= 50, "the server kept reading")
        // Each request asks for 8 KiB; unbounded buffering would have taken every byte we offered.
        let requests = sent / request(1).count
        #expect(requests < 20_000, "\(requests) requests accepted from a client that reads nothing")
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 10).page == wpage(1 << 32 | 10))
        // Now it reads: every whole request it sent is answered, once, with the page.
        var answered = Set<UInt64>()
        for n in 1...whole {
            guard let frame = await greedy.readFrame(), let answer = try? Wire.decodeResponse(frame),
                  case .getPage(let p)? = answer.body, p.page == wpage(1 << 32 | 10) else {
                Issue.record("answer \(n) of \(whole) is missing or not the page")
                break
            }
            answered.insert(answer.requestId)
        }
        #expect(answered == Set(1...UInt64(whole)))
        await c.close()
        #expect(await server.stop(SIGKILL) != 0)
    }

    /// One connection past --max-connections gets RESOURCE_EXHAUSTED for
    /// request id 0, then a close; a wait_ms past --max-wait-lsn-ms is cut
    /// to it. Both come back as soon as the limit allows.
    @Test func connectionAndWaitLimits() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--max-connections", "3", "--max-wait-lsn-ms", "300"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        _ = try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let held = try (0..<2).map { _ in try RawConnection(dir.socket) }
        try await Task.sleep(for: .milliseconds(200))
        let extra = try RawConnection(dir.socket)
        let answer = (await extra.readFrame()).flatMap { try? Wire.decodeResponse($0) }
        guard case .error(let e)? = answer?.body else {
            Issue.record("expected an Error, got \(String(describing: answer))")
            return
        }
        #expect(answer?.requestId == 0 && e.code == .resourceExhausted && e.message.contains("maximum of 3"), "\(e.message)")
        #expect(await extra.isClosed())
        let start = ContinuousClock.now
        await expectServerError(.lsnNotAvailable) { try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 99, waitMs: 60_000) }
        let waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(250) && waited < .seconds(5), "\(waited)")
        withExtendedLifetime(held) {}  // open until here (an optimized build would close them at their last use)
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// `--idle-timeout-s` and `--frame-timeout-s` reach the connections: a
    /// silent peer goes after the idle time, one stuck inside a frame after the
    /// frame time (idle does not apply to it), and a client that keeps asking stays.
    @Test(arguments: eventLoops) func idleAndSlowPeersAreClosedAtTheTimesGiven(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop, "--idle-timeout-s", "1", "--frame-timeout-s", "3"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        let start = ContinuousClock.now
        let silent = try RawConnection(dir.socket)
        let partial = try RawConnection(dir.socket)
        partial.send([0, 0, 0, 100] + [UInt8](repeating: 0x0a, count: 10))  // 10 of a frame's 100 bytes
        var silentGone: Duration?
        var partialGone: Duration?
        while partialGone == nil || silentGone == nil, ContinuousClock.now - start < .seconds(10) {
            _ = try await c.tenantStatus(tenantA)  // every 200 ms: never idle for a second
            try await Task.sleep(for: .milliseconds(200))
            if silentGone == nil, silent.isClosedNow() { silentGone = ContinuousClock.now - start }
            if partialGone == nil, partial.isClosedNow() { partialGone = ContinuousClock.now - start }
        }
        // Checked about once a second, so up to a second past the limit, and more under load.
        #expect(silentGone.map { $0 >= .milliseconds(900) && $0 < .seconds(6) } == true, "silent: \(String(describing: silentGone))")
        #expect(partialGone.map { $0 >= .milliseconds(2_900) && $0 < .seconds(9) } == true, "partial frame: \(String(describing: partialGone))")
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 0, "the client that kept asking is still served")
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A peer whose requests are all answered, and which reads none of the
    /// answers, is closed after a grace, its answers sent or not. It asks for
    /// pages until its socket is full, then for two more (answers the server
    /// keeps, under its high water mark, so it reads on), and shuts its
    /// sending side. On the nio loop the close waited for those answers to be
    /// written, which never happened: the connection, its answers and its
    /// descriptor stayed for as long as the peer kept its end open.
    @Test(arguments: eventLoops) func aPeerThatHalfClosesAndReadsNoAnswerIsClosedAfterAGrace(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let deaf = try RawConnection(dir.socket)
        func ask(_ id: UInt64) {
            deaf.send(Wire.frame(Wire.encode(Wire.Request(requestId: id, body: .getPage(
                Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 10, waitMs: 0))))))
        }
        func unread() -> Int32 {
            var n: Int32 = 0
            _ = ioctl(deaf.fd, UInt(FIONREAD), &n)
            return n
        }
        var id: UInt64 = 0
        var full = false
        while !full, id < 1_000 {
            let before = unread()
            id += 1
            ask(id)
            let asked = ContinuousClock.now
            while unread() < before + 8_192, ContinuousClock.now - asked < .milliseconds(500) {
                try await Task.sleep(for: .milliseconds(5))
            }
            full = unread() < before + 8_192
        }
        #expect(full, "the socket never filled")
        ask(id + 1)
        ask(id + 2)
        shutdown(deaf.fd, Int32(SHUT_WR))
        let start = ContinuousClock.now
        var gone: Duration?
        while gone == nil, ContinuousClock.now - start < .seconds(20) {
            if try await c.serverStatus().connections == 1 { gone = ContinuousClock.now - start }
            try await Task.sleep(for: .milliseconds(200))
        }
        // The grace is 5 s, checked about once a second.
        #expect(gone.map { $0 < .seconds(10) } == true, "the deaf peer's connection, after \(id) pages filled its socket: \(String(describing: gone))")
        withExtendedLifetime(deaf) {}
        await c.close()
        #expect(await server.stop() == 0)
    }

    @Test func sigtermFinishesInFlightRequestsAndRemovesTheSocket() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        // In flight when SIGTERM arrives: a read that would wait a minute for an LSN that never comes.
        let before = try await c.serverStatus().requests
        let waiting = Task { () -> (Wire.ErrorCode, String)? in
            do {
                _ = try await c.getPage(tenant: tenantA, key: wkey(1), lsn: 20, waitMs: 60_000)
                return nil
            } catch let ClientError.server(code, message) {
                return (code, message)
            } catch {
                return (.unspecified, "\(error)")
            }
        }
        // Signal only once the server has the read (the status call itself counts one more).
        let probe = try await server.client()
        while try await probe.serverStatus().requests < before + 3 { try await Task.sleep(for: .milliseconds(5)) }
        await probe.close()
        let signalled = ContinuousClock.now
        server.process.signal(SIGTERM)
        // It is answered at once, TENANT_UNAVAILABLE, not cut off and not left to wait out its minute.
        let answer = await waiting.value
        #expect(answer?.0 == .tenantUnavailable && answer?.1.contains("shutting down") == true, "\(String(describing: answer))")
        #expect(await server.stop() == 0)
        #expect(ContinuousClock.now - signalled < .seconds(10), "SIGTERM exits within 10 s")
        #expect(!FileManager.default.fileExists(atPath: dir.socket))
        await c.close()
    }

    /// SIGTERM under steady load: open connections stop taking requests,
    /// answer what they took and close, and only then does the server stop.
    /// Before, they went on taking requests, the wait ended the first moment
    /// none ran, and the server closed them with reads running ("stopping
    /// with N requests still running"; helper-65 saw up to 120). The old
    /// code failed this in one run of two or three: it depends on when the
    /// count in flight touched zero.
    @Test(.enabled(if: !(ProcessInfo.processInfo.environment["LAYERGATE_SERVER_ARGS"] ?? "").contains("nio"),
                   "LAYERGATE_SERVER_ARGS runs the server on SwiftNIO, whose connections take requests until they close"))
    func sigtermUnderLoadStopsTakingRequestsAndAnswersWhatItTook() async throws {
        let dir = ServerDir()
        // Most reads miss a 1 MiB page cache and go to the disk: they are in flight for a while,
        // and, pipelined, some are nearly always running.
        let server = try await ServerProcess(dir: dir, extraArgs: ["--page-cache-mib", "1"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        let pages: UInt32 = 2000
        for start in stride(from: 0, to: pages, by: 200) {
            _ = try await c.putRecords(tenant: tenantA, (start..<start + 200).map { wimage($0, 10 + UInt64($0)) })
        }
        _ = try await c.compact(tenant: tenantA)  // into layer files
        await c.close()
        let socket = dir.socket
        let readers = (0..<16 as Range<UInt32>).map { seed in
            Task {
                await onThreadResult { () throws(ClientError) -> (answered: Int, wrong: Int) in
                    let conn = try LayerGateConnection(socketPath: socket)
                    var (answered, wrong, k) = (0, 0, seed * 251)
                    while true {
                        // 64 in flight on each connection: with 16 of them, some read is nearly always running.
                        let keys = (0..<64).map { _ in
                            k = (k &* 7919 &+ 13) % pages
                            return k
                        }
                        for (key, outcome) in zip(keys, conn.getPages(tenant: tenantA, keys: keys.map { wkey($0) })) {
                            guard case .success(let got) = outcome else { return (answered, wrong) }  // closed
                            if got.page != wpage(UInt64(key) << 32 | (10 + UInt64(key))) { wrong += 1 }
                            answered += 1
                        }
                    }
                }
            }
        }
        try await Task.sleep(for: .milliseconds(700))
        let signalled = ContinuousClock.now
        server.process.signal(SIGTERM)
        var answered = 0
        for r in readers {
            let outcome = try await r.value.get()
            #expect(outcome.wrong == 0)
            answered += outcome.answered
        }
        #expect(await server.stop() == 0)
        #expect(ContinuousClock.now - signalled < .seconds(6), "within the 8 s grace: nothing held it")
        #expect(answered > 100, "\(answered) pages read")
        #expect(!server.log.contains("still running"), "\(server.log)")
    }

    @Test func aSecondServerOnTheSameSocketRefusesToStart() async throws {
        let dir = ServerDir()
        let first = try await ServerProcess(dir: dir)
        let second = try await runToExit(try builtExecutable("layergated").path,
                                         ["--socket", dir.socket, "--data-dir", dir.path + "/data2"])
        #expect(second.status != 0)
        let text = second.stderr
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

@Suite("layergated crashes and compaction over the socket", .serialized)
struct ServerCrashTests {
    /// SIGKILL during a stream of puts, restart: every acknowledged record reads back.
    @Test func sigkillDuringPutsThenRestart() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--checkpoint-distance-mib", "1"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        let acked = AckLog()
        let writer = Task {
            var lsn: UInt64 = 0
            while true {
                lsn += 1
                do { _ = try await c.putRecords(tenant: tenantA, [wimage(UInt32(lsn % 40), lsn)]) } catch { return }
                acked.record(lsn)
            }
        }
        // Kill mid-stream, once a fair number of puts are acknowledged (however slow the machine).
        let deadline = ContinuousClock.now + .seconds(60)
        while acked.last < 60 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(await server.stop(SIGKILL) != 0)
        await writer.value
        // A call on a connection whose server is gone fails; it does not wait forever.
        await #expect(throws: (any Error).self) { _ = try await c.listTenants() }
        await c.close()
        let last = acked.last
        #expect(last >= 60)
        let restarted = try await ServerProcess(dir: dir)
        let r = try await restarted.client()
        #expect(try await r.tenantStatus(tenantA).lastRecordLsn >= last)
        for lsn in 1...last {
            let p = try await r.getPage(tenant: tenantA, key: wkey(UInt32(lsn % 40)), lsn: lsn)
            #expect(p.page == wpage(UInt64(lsn % 40) << 32 | lsn), "LSN \(lsn)")
        }
        await r.close()
        #expect(await restarted.stop() == 0)
    }

    /// The stuck-compaction scenario of #3, driven over the socket: the second
    /// output fails mid-way, the failpoint goes off, the next compaction succeeds.
    @Test func stuckCompactionScenarioOverTheSocket() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--enable-failpoints", "--compaction-period-s", "3600",
                                                                   "--compaction-target-mib", "1"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        // 300 keys of 8 KiB make 2.4 MiB per image set: with 1 MiB outputs a compaction writes three.
        for round in 0..<4 as Range<UInt64> {
            let records = (0..<300 as Range<UInt32>).map { wimage($0, round * 300 + UInt64($0) + 1) }
            for start in stride(from: 0, to: records.count, by: 50) {
                try await c.putRecords(tenant: tenantA, Array(records[start..<start + 50]))
            }
            _ = try await c.compact(tenant: tenantA)  // flushes; merges once there are two L0s
        }
        try await c.configureFailpoints([Wire.Failpoint(name: "compaction-after-first-output", action: "return")])
        let more = (0..<300 as Range<UInt32>).map { wimage($0, 1200 + UInt64($0) + 1) }
        for start in stride(from: 0, to: more.count, by: 50) { try await c.putRecords(tenant: tenantA, Array(more[start..<start + 50])) }
        await expectServerError(.internal) { try await c.compact(tenant: tenantA, forceImageLayers: true) }
        let failed = try await c.tenantStatus(tenantA)
        #expect(failed.compactionFailures == 1 && failed.lastCompactionError.contains("compaction-after-first-output"))
        try await c.configureFailpoints([Wire.Failpoint(name: "compaction-after-first-output", action: "off")])
        let ok = try await c.compact(tenant: tenantA, forceImageLayers: true)
        #expect(ok.layersCreated >= 2)
        #expect(try await c.tenantStatus(tenantA).compactionFailures == 0)
        for b in stride(from: 0, to: 300, by: 37) as StrideTo<UInt32> {
            #expect(try await c.getPage(tenant: tenantA, key: wkey(b)).page == wpage(UInt64(b) << 32 | (1200 + UInt64(b) + 1)))
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A failpoint `exit` during compaction, then a restart: pages intact, compaction works.
    @Test func failpointExitDuringCompactionThenRestart() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--enable-failpoints", "--compaction-period-s", "3600"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        for round in 0..<3 as Range<UInt64> {
            let records = (0..<100 as Range<UInt32>).map { wimage($0, round * 100 + UInt64($0) + 1) }
            try await c.putRecords(tenant: tenantA, records)
            _ = try await c.compact(tenant: tenantA)
        }
        try await c.configureFailpoints([Wire.Failpoint(name: "after-layer-publish-before-index", action: "exit")])
        try await c.putRecords(tenant: tenantA, (0..<100 as Range<UInt32>).map { wimage($0, 300 + UInt64($0) + 1) })
        await #expect(throws: (any Error).self) { _ = try await c.compact(tenant: tenantA, forceImageLayers: true) }
        #expect(await server.stop() == 99)  // it died at the failpoint
        await c.close()
        let restarted = try await ServerProcess(dir: dir)
        let r = try await restarted.client()
        for b in stride(from: 0, to: 100, by: 9) as StrideTo<UInt32> {
            #expect(try await r.getPage(tenant: tenantA, key: wkey(b)).page == wpage(UInt64(b) << 32 | (300 + UInt64(b) + 1)))
        }
        let result = try await r.compact(tenant: tenantA, forceImageLayers: true)
        #expect(result.layersCreated >= 1)
        await r.close()
        #expect(await restarted.stop() == 0)
    }

    /// Admin requests from another uid get PERMISSION_DENIED (reads still work).
    @Test func aNonAdminPeerIsDeniedAdminRequests() async throws {
        guard getuid() == 0 else {
            print("skipped aNonAdminPeerIsDeniedAdminRequests: needs root to run the CLI as nobody (uid \(getuid()))")
            return
        }
        guard let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("skipped aNonAdminPeerIsDeniedAdminRequests: setpriv is not installed")
            return
        }
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--socket-mode", "666", "--enable-failpoints"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        let cli = try builtExecutable("layergate").path
        func asNobody(_ args: [String]) async throws -> (Int32, String) {
            let run = try await runToExit(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", cli, "--socket", dir.socket] + args)
            return (run.status, run.stderr)
        }
        // Without --auth-public-key only the server's uid (or root) writes pages or sees the
        // server: a peer that can connect may read the tenants it names, nothing more.
        for args in [["create-tenant", "ffffffffffffffffffffffffffffffff"], ["compact", tenantA], ["reset-tenant", tenantA],
                     ["failpoint", "index-before-rename", "off"], ["put", tenantA, "--generate", "3"], ["tenants"], ["status"]] {
            let (status, err) = try await asNobody(args)
            #expect(status != 0 && err.contains("PERMISSION_DENIED"), "\(args): \(err)")
        }
        for args in [["get-page", tenantA, "--rel", "1000", "--block", "1", "--lsn", "10"], ["status", tenantA]] {
            let (status, err) = try await asNobody(args)
            #expect(status == 0, "reads are for everyone who can connect: \(args): \(err)")
        }
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 10, "nothing was written")
        #expect(try await c.listTenants() == [tenantA])
        await c.close()
        #expect(await server.stop() == 0)
    }
}

extension ServerTests {
    /// Peers of another uid that fill the connection table leave the
    /// reserved connections to the server's uid and root: the ingester and
    /// the operator get in, and the refusal says why.
    @Test(arguments: eventLoops) func otherPeersLeaveTheReservedConnectionsToTheServersUid(eventLoop: String) async throws {
        guard getuid() == 0 else {
            print("skipped otherPeersLeaveTheReservedConnectionsToTheServersUid: needs root to connect as nobody (uid \(getuid()))")
            return
        }
        guard let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }),
              let python = ["/usr/bin/python3", "/bin/python3"].first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else {
            print("skipped otherPeersLeaveTheReservedConnectionsToTheServersUid: needs setpriv and python3")
            return
        }
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: [
            "--socket-mode", "666", "--max-connections", "12", "--reserved-connections", "4", "--event-loop", eventLoop])
        let owner = try await server.client()
        try await owner.createTenant(tenantA)
        // As nobody: 12 connections, held until stdin closes; prints how many the server refused, and with which reason.
        let script = """
            import socket, select, sys, time
            path, n, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
            socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(n)]
            for s in socks: s.connect(path)
            refused, told, deadline = set(), 0, time.time() + 10
            while len(refused) < want and time.time() < deadline:
                r, _, _ = select.select([s for s in socks if s not in refused], [], [], 0.2)
                for s in r:
                    got = b""
                    while True:
                        b = s.recv(65536)
                        if not b: break
                        got += b
                    refused.add(s)
                    told += b"its own uid and root" in got
            time.sleep(0.3)  # no more refusals come
            r, _, _ = select.select([s for s in socks if s not in refused], [], [], 0)
            print(len(refused) + len(r), told, flush=True)
            sys.stdin.read()
            """
        let peers = Process()
        peers.executableURL = URL(fileURLWithPath: setpriv)
        peers.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", script, dir.socket, "12", "5"]
        let (input, output) = (Pipe(), Pipe())
        peers.standardInput = input
        peers.standardOutput = output
        try peers.run()
        defer { try? input.fileHandleForWriting.close(); peers.waitUntilExit() }
        // A blocking read: on a thread of its own, never one of Swift's few pool threads.
        let line = await onThread {
            var got = Data()
            while !got.contains(UInt8(ascii: "\n")) {
                let more = output.fileHandleForReading.availableData
                if more.isEmpty { break }
                got += more
            }
            return String(decoding: got, as: UTF8.self)
        }
        let figures = line.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        // The owner's connection is one of the 12 (its uid counts like any other): nobody gets 12 - 4 - 1 = 7.
        #expect(figures == [5, 5], "nobody's 12 connections: refused, with the reason: \(line)")
        let ingester = try await server.client()
        try await ingester.putRecords(tenant: tenantA, [wimage(1, 10)])
        #expect(try await ingester.tenantStatus(tenantA).lastRecordLsn == 10, "the server's uid writes while others fill the table")
        for _ in 0..<2 {
            let operator_ = try await server.client()
            #expect(try await operator_.listTenants() == [tenantA])
            await operator_.close()
        }
        await ingester.close()
        await owner.close()
        #expect(await server.stop() == 0)
    }
}

final class AckLog: Sendable {
    private let value = Mutex<UInt64>(0)
    func record(_ lsn: UInt64) { value.withLock { $0 = max($0, lsn) } }
    var last: UInt64 { value.withLock { $0 } }
}

/// Answers the peers of a test have had so far.
private final class AnswerCount: Sendable {
    let count = Atomic<Int>(0)
}
