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
                // Cancelled while a call waits, the call ends with `cancelled`: the polling is over.
                do { _ = try await poller.tenantStatus(tenantA) } catch ClientError.cancelled { break }
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
        let (code, out, err) = try await runCLI(["put", tenantA, "--generate", "2000", "--batch", "8", "--pipeline", "32",
                                           "--socket", dir.socket, "--json"])
        #expect(code == 0, "\(err)")
        #expect(out.contains("2000"), "\(out)")
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == 2000)
        await c.close()
        #expect(await server.stop() == 0)
    }
}

/// Large frames read in whatever pieces the peer's writes make: the rest of a
/// PutRecords goes straight into a buffer of its whole size (`Connection.keepRest`,
/// `receiveInPlace`), and the frames behind it, cut anywhere, must come out whole.
@Suite("large frames in pieces over a real socket", .serialized)
struct LargeFramePiecesTests {
    @Test func putsAndReadsCutAtEveryKindOfBoundaryAreAllAnswered() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        // 12 puts of 40 images (about 330 KiB each, above the 64 KiB small-frame size),
        // each followed by a GetPage at its last LSN (it waits for the put) of one of its blocks.
        var stream: [UInt8] = []
        var expected: [UInt64: (isPut: Bool, lsn: UInt64, page: [UInt8]?)] = [:]
        var lsn: UInt64 = 0
        var id: UInt64 = 0
        for put in 0..<12 {
            let records = (0..<40).map { i -> Wire.Record in
                lsn += 1
                return wimage(UInt32(put * 40 + i), lsn)
            }
            id += 1
            stream += Wire.frame(Wire.encode(Wire.Request(requestId: id, body: .putRecords(Wire.PutRecordsRequest(tenantId: tenantA, records: records)))))
            expected[id] = (true, lsn, nil)
            let block = UInt32(put * 40 + put % 40)
            let blockLsn = lsn - 39 + UInt64(put % 40)
            id += 1
            stream += Wire.frame(Wire.encode(Wire.Request(requestId: id, body: .getPage(Wire.GetPageRequest(
                tenantId: tenantA, key: wkey(block), lsn: lsn, waitMs: 10_000)))))
            expected[id] = (false, lsn, wpage(UInt64(block) << 32 | blockLsn))
        }
        // Pieces of 1 byte to 200 KiB, with pauses, so frames and headers are cut anywhere and read partly.
        let raw = try RawConnection(dir.socket)
        let sizes = [1, 3, 4, 5, 4093, 65_536, 65_541, 200_000, 7, 131_072, 2, 99_999]
        let (fd, bytes) = (raw.fd, stream)
        let writer = Thread {
            var at = 0
            var turn = 0
            while at < bytes.count {
                let end = min(at + sizes[turn % sizes.count], bytes.count)
                while at < end {
                    // MSG_NOSIGNAL: a server that closed early fails the test, not the test process.
                    let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + at, end - at, Int32(MSG_NOSIGNAL)) }
                    guard n > 0 else { return }
                    at += n
                }
                turn += 1
                if turn % 3 == 0 { usleep(2_000) }
            }
        }
        writer.start()
        var problems: [String] = []
        for _ in 0..<expected.count {
            guard let frame = await raw.readFrame() else {
                problems.append("the connection ended early")
                break
            }
            let response = try Wire.decodeResponse(frame)
            guard let want = expected.removeValue(forKey: response.requestId) else {
                problems.append("an answer to \(response.requestId), which was not asked or was answered twice")
                continue
            }
            switch response.body {
            case .putRecords(let r)? where want.isPut:
                if r.lastRecordLsn < want.lsn { problems.append("put \(response.requestId) answered LSN \(r.lastRecordLsn) < \(want.lsn)") }
            case .getPage(let r)? where !want.isPut:
                if r.page != want.page { problems.append("GetPage \(response.requestId) returned the wrong bytes") }
            default:
                problems.append("request \(response.requestId): \(String(describing: response.body))")
            }
        }
        #expect(problems.isEmpty, "\(problems.prefix(5))")
        let unanswered = expected.keys.sorted()  // ids only: the expected pages would flood the report
        #expect(unanswered.isEmpty, "unanswered: \(unanswered.prefix(5))")
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == lsn)
        for block in stride(from: 0, to: 480, by: 37) as StrideTo<UInt32> {
            #expect(try await c.getPage(tenant: tenantA, key: wkey(block)).page == wpage(UInt64(block) << 32 | UInt64(block + 1)))
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Large puts pipelined past the in-flight budget: each waits for room,
    /// and the room comes back as the puts before it are answered. Before the fix,
    /// a pass that stopped at a frame the budget had no room for returned
    /// before sending the answers it had appended, so their reservations were
    /// never given back, and one connection's 30 puts against a 1 MiB budget
    /// got no answer at all (found by an adversarial run). Each wait is short,
    /// so none comes near the frame time, which bounds a wait for room.
    @Test(arguments: ServerTests.eventLoops) func largePutsPipelinedPastTheInflightBudgetAreAllAnswered(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop, "--max-inflight-mib", "1", "--frame-timeout-s", "1"])
        let c = try await server.client()
        let tenants = (0..<3).map { String(format: "b0000000000000000000000000000%03x", $0) }
        var streams: [[UInt8]] = []
        for t in tenants {
            try await c.createTenant(t)
            var bytes: [UInt8] = []
            for put in 0..<20 as Range<UInt64> {
                // 9 images: about 74 KB, over the 64 KiB of a small frame, so each reserves its size.
                let records = (1...9 as ClosedRange<UInt64>).map { i in wimage(UInt32(i), put * 9 + i) }
                bytes += Wire.frame(Wire.encode(Wire.Request(requestId: put + 1, body: .putRecords(Wire.PutRecordsRequest(tenantId: t, records: records)))))
            }
            streams.append(bytes)
        }
        let raws = try tenants.map { _ in try RawConnection(dir.socket) }
        for (raw, bytes) in zip(raws, streams) { raw.sendAllInBackground(bytes) }
        for (t, raw) in zip(tenants, raws) {
            var answered: [UInt64] = []
            while answered.count < 20, let frame = await raw.readFrame() {  // nil after 10 s without a byte
                let answer = try Wire.decodeResponse(frame)
                guard case .putRecords(let r)? = answer.body else {
                    Issue.record("tenant \(t), request \(answer.requestId): \(String(describing: answer.body).prefix(200))")
                    continue
                }
                #expect(r.lastRecordLsn >= answer.requestId * 9, "tenant \(t), put \(answer.requestId)")
                answered.append(answer.requestId)
            }
            // Answers may come in any order (the wire contract); that each put was
            // accepted shows they were applied in the order sent.
            #expect(answered.sorted() == Array(1...20), "tenant \(t): answered \(answered.count) of 20")
            #expect(try await c.tenantStatus(t).lastRecordLsn == 180)
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A writer that reads none of its answers holds no budget once its puts
    /// are answered. Its answers queue behind 30 pages it does not read; a
    /// put's budget used to come back only once its answer was sent, so its
    /// dozen 1 MB puts kept the writers' 8 MiB pool from every other
    /// ingester until its idle timeout (found by an adversarial run).
    @Test(arguments: ServerTests.eventLoops) func aWriterThatReadsNoAnswerHoldsNoBudgetFromOthers(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop, "--max-inflight-mib", "8"])
        let c = try await server.client()
        let (deaf, other) = ("d0000000000000000000000000000001", "d0000000000000000000000000000002")
        try await c.createTenant(deaf)
        try await c.createTenant(other)
        _ = try await c.putRecords(tenant: deaf, (1...30 as ClosedRange<UInt32>).map { wimage($0, 1) })
        var bytes: [UInt8] = []
        for id in 1...30 as ClosedRange<UInt64> {
            bytes += Wire.frame(Wire.encode(Wire.Request(requestId: id, body: .getPage(
                Wire.GetPageRequest(tenantId: deaf, key: wkey(UInt32(id)), lsn: 1)))))
        }
        for put in 0..<12 as Range<UInt64> {
            let records = largePut(blocksAfter: 1000, lsnsAfter: 2 + put * 120)
            bytes += Wire.frame(Wire.encode(Wire.Request(requestId: 100 + put, body: .putRecords(Wire.PutRecordsRequest(tenantId: deaf, records: records)))))
        }
        let raw = try RawConnection(dir.socket)
        raw.sendAllInBackground(bytes)  // its answers are never read
        // Every put of the deaf writer is stored, its answers unread.
        let stored = ContinuousClock.now
        while try await c.tenantStatus(deaf).lastRecordLsn < 2 + 12 * 120, ContinuousClock.now - stored < .seconds(10) {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try await c.tenantStatus(deaf).lastRecordLsn == 2 + 12 * 120)
        let writer = try await LayerGateClient.connect(socketPath: dir.socket, timeout: .seconds(10))
        let start = ContinuousClock.now
        for put in 0..<5 as Range<UInt64> {
            // About 660 KB: more than the room eight of the deaf writer's puts would leave.
            let records = (1...80 as ClosedRange<UInt64>).map { i in wimage(UInt32(i), put * 80 + i) }
            #expect(try await writer.putRecords(tenant: other, records) == put * 80 + 80)
        }
        #expect(ContinuousClock.now - start < .seconds(5))
        withExtendedLifetime(raw) {}  // open, unread, until here
        await writer.close()
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A writer that reads none of its answers cannot keep a half-sent put's
    /// room in the budget: held back by its own unread answers, its frame's
    /// clock stopped, and every other large put was refused for want of room
    /// until its idle timeout (found by an adversarial run).
    @Test(arguments: ServerTests.eventLoops) func aPeerThatReadsNoAnswerGivesBackTheRoomOfItsHalfSentPut(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop, "--max-inflight-mib", "1", "--frame-timeout-s", "1", "--idle-timeout-s", "60"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        _ = try await c.putRecords(tenant: tenantA, (1...32 as ClosedRange<UInt32>).map { wimage($0, UInt64($0)) })
        // 32 GetPages that wait for LSN 100 (as many as a connection may run), 28 that
        // need not wait, then half of a put of about 985 KB. When the waits end, the
        // first answer lets the server take the 28 and reserve the put's room in one
        // pass; then 60 unread pages fill the socket, and the server holds it back.
        var bytes: [UInt8] = []
        for id in 1...60 as ClosedRange<UInt64> {
            bytes += Wire.frame(Wire.encode(Wire.Request(requestId: id, body: .getPage(
                Wire.GetPageRequest(tenantId: tenantA, key: wkey(UInt32(id % 32 + 1)), lsn: id <= 32 ? 100 : 32, waitMs: 30_000)))))
        }
        let put = Wire.frame(Wire.encode(Wire.Request(requestId: 99, body: .putRecords(Wire.PutRecordsRequest(
            tenantId: tenantA, records: largePut(blocksAfter: 1000, lsnsAfter: 1000))))))
        bytes += put[..<(put.count / 2)]
        let deaf = try RawConnection(dir.socket)
        deaf.sendAllInBackground(bytes)
        try await Task.sleep(for: .milliseconds(500))
        // The waits end.
        _ = try await c.putRecords(tenant: tenantA, [wimage(500, 100)])
        let start = ContinuousClock.now
        let honest = try await putUntilStored(server, largePut(blocksAfter: 2000, lsnsAfter: 2000), for: .seconds(20))
        let took = ContinuousClock.now - start
        #expect(honest.stored && took < .seconds(10), "an honest put waited \(took) for the room a deaf writer held")
        withExtendedLifetime(deaf) {}
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A put refused while the async client is still writing it reaches the
    /// caller as the server's answer, RESOURCE_EXHAUSTED, not as a broken pipe
    /// or a closed connection: the answer comes just before the close, while
    /// the client's loop waits both to write and to read.
    @Test(arguments: ServerTests.eventLoops) func aPutRefusedWhileStillBeingSentIsAnsweredWithTheReason(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop, "--max-inflight-mib", "1", "--frame-timeout-s", "1"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        // A 3 MiB frame, larger than the budget, is let in alone: announced and
        // not sent, it holds the whole budget for its frame time, 1 s + 3 s.
        let holder = try RawConnection(dir.socket)
        holder.send([0x00, 0x30, 0x00, 0x00])
        try await Task.sleep(for: .milliseconds(300))
        let writer = try await server.client()
        // Six puts of about 985 KB pipelined: the first waits for room, the rest are still being written.
        let puts: [Wire.Request.Body] = (0..<6 as Range<UInt32>).map { k in
            .putRecords(Wire.PutRecordsRequest(tenantId: tenantA, records: largePut(blocksAfter: k * 1000, lsnsAfter: UInt64(k * 1000))))
        }
        let refusal = "a request of 985480 bytes found no room among the server's large requests in flight for 1.0 seconds; retry later"
        for outcome in await writer.callMany(puts) {
            switch outcome {
            case .success: Issue.record("stored while another frame held the whole budget")
            case .failure(let e): #expect(e == .server(code: .resourceExhausted, message: refusal), "the refusal came as \(e)")
            }
        }
        withExtendedLifetime(holder) {}
        await writer.close()
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Peers that each announce a large frame and send nothing more wait for
    /// room in the budget for the frame time at most, then are refused
    /// (RESOURCE_EXHAUSTED, then a close). Before, their frame clocks stopped
    /// while they waited, so they were let in one at a time, each holding the
    /// budget until its own frame time, and an honest put queued behind them
    /// all: 500 such peers held the budget for about 9 minutes (found by an
    /// adversarial run). Here 16 of them would take 16 s or more.
    @Test(arguments: ServerTests.eventLoops) func peersThatAnnounceLargeFramesAndStallWaitForRoomOnlySoLong(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop, "--max-inflight-mib", "1", "--frame-timeout-s", "1"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        let start = ContinuousClock.now
        let stalled = try (0..<16).map { _ in try RawConnection(dir.socket) }
        for raw in stalled { raw.send([0, 0x0e, 0, 0]) }  // 896 KiB announced: one fits in the budget at a time
        try await Task.sleep(for: .milliseconds(300))
        // An honest put of about 820 KB among them: refused while there is no room, stored once sent again.
        let records = (1...100 as ClosedRange<UInt32>).map { wimage($0, UInt64($0)) }
        let honest = try await putUntilStored(server, records, for: .seconds(30))
        for message in honest.refusals.compactMap({ $0 }) {
            #expect(message.contains("no room among the server's large requests in flight"), "\(message)")
        }
        #expect(honest.stored, "refused \(honest.refusals.count) times")
        for raw in stalled {
            // Refused with a reason while waiting, or closed by its frame time once let in.
            if let frame = await raw.readFrame() {
                let answer = try Wire.decodeResponse(frame)
                guard case .error(let e)? = answer.body else {
                    Issue.record("a stalled peer got \(String(describing: answer.body))")
                    continue
                }
                #expect(answer.requestId == 0 && e.code == .resourceExhausted, "\(e.message)")
                #expect(await raw.isClosed())
            }
        }
        let allGone = ContinuousClock.now - start
        #expect(allGone < .seconds(10), "the stalled peers were held \(allGone)")
        #expect(try await c.getPage(tenant: tenantA, key: wkey(100)).page == wpage(100 << 32 | 100))
        await c.close()
        #expect(await server.stop() == 0)
    }
}

/// Puts `records` in `tenantA` on a new connection each time until they are
/// stored, as a client told RESOURCE_EXHAUSTED retries: whether they were
/// within `limit`, and each refusal's message (nil: the server closed while the
/// client was still writing the frame, so its write failed first).
private func putUntilStored(_ server: ServerProcess, _ records: [Wire.Record], for limit: Duration) async throws
    -> (stored: Bool, refusals: [String?])
{
    let start = ContinuousClock.now
    var refusals: [String?] = []
    while ContinuousClock.now - start < limit {
        let writer = try await server.client()
        var failure: (any Error)?
        do { _ = try await writer.putRecords(tenant: tenantA, records) } catch { failure = error }
        await writer.close()
        switch failure {
        case nil: return (true, refusals)
        case ClientError.server(code: .resourceExhausted, let message)?: refusals.append(message)
        case ClientError.connectionClosed?, ClientError.transport?: refusals.append(nil)
        case let other?: throw other
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    return (false, refusals)
}

/// 120 images, about 985 KB as a frame: a large request, which reserves its
/// size in the in-flight budget (nearly all of a 1 MiB one).
private func largePut(blocksAfter block: UInt32, lsnsAfter lsn: UInt64) -> [Wire.Record] {
    (1...120 as ClosedRange<UInt32>).map { wimage(block + $0, lsn + UInt64($0)) }
}
