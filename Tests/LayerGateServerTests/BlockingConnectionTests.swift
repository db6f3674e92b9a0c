import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Testing

/// `LayerGateConnection`, the blocking Swift client, against the real server:
/// the answers, batches far larger than the socket buffers, put ordering, and
/// every way the connection itself can fail.
@Suite("the blocking Swift client", .serialized)
struct BlockingConnectionTests {
    @Test func answersMatchTheAsyncClientAndABatchFailsPerRequest() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let socket = dir.socket
        let lsn = try await onThread { () throws(ClientError) -> UInt64 in
            let c = try LayerGateConnection(socketPath: socket, timeout: .seconds(30))
            try c.createTenant(tenantA)
            return try c.putRecords(tenant: tenantA, (0..<20).map { wimage($0, UInt64($0) + 1) })
        }
        #expect(lsn == 20)
        let asyncClient = try await server.client()
        let viaAsync = try await asyncClient.getPage(tenant: tenantA, key: wkey(7))
        let results = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: socket, timeout: .seconds(30))
            let one = try c.getPage(tenant: tenantA, key: wkey(7))
            // Block 999 was never written: its answer fails alone, the others are served.
            let batch = c.getPages(tenant: tenantA, keys: [wkey(1), wkey(999), wkey(19)])
            let status = try c.tenantStatus(tenantA)
            return (one, batch, status)
        }
        #expect(results.0 == viaAsync)
        #expect(results.0.page == wpage(7 << 32 | 8))
        #expect(try results.1[0].get().page == wpage(1 << 32 | 2))
        guard case .failure(.server(let code, _)) = results.1[1] else {
            Issue.record("block 999: \(results.1[1])")
            return
        }
        #expect(code == .pageNotFound)
        #expect(try results.1[2].get().page == wpage(19 << 32 | 20))
        #expect(results.2.lastRecordLsn == 20)
        // The async client's batch, the same way.
        let asyncBatch = await asyncClient.getPages(tenant: tenantA, keys: [wkey(1), wkey(999)])
        #expect(try asyncBatch[0].get().page == wpage(1 << 32 | 2))
        #expect(asyncBatch.count == 2)
        if case .success = asyncBatch[1] { Issue.record("block 999 was served") }
        await asyncClient.close()
        #expect(await server.stop() == 0)
    }

    /// 6,000 GetPages, each with a 2 KB token (which a server without
    /// `--auth-public-key` ignores), are 12 MB of requests and 49 MB of
    /// answers: written before anything is read, the two sides would block on
    /// full socket buffers for ever (the server stops reading a connection that
    /// does not read its answers). The connection's timeout turns such a hang into a failure.
    @Test func aBatchLargerThanTheSocketBuffersFlowsBothWays() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let socket = dir.socket
        let outcome = try await onThread { () throws(ClientError) -> (Int, Int, UInt64) in
            let c = try LayerGateConnection(socketPath: socket, token: String(repeating: "t", count: 2000), timeout: .seconds(30))
            try c.createTenant(tenantA)
            // 2,000 one-record puts pipelined: each must be applied after the one before it.
            let puts = c.putMany(tenant: tenantA, (1...2000).map { [wimage(UInt32($0 % 100), UInt64($0))] })
            let refused = puts.filter { if case .failure = $0 { return true } else { return false } }.count
            let keys = (0..<6000).map { wkey(UInt32($0 % 100)) }
            let pages = c.getPages(tenant: tenantA, keys: keys)
            var wrong = 0
            for (i, p) in pages.enumerated() {
                let block = UInt64(i % 100)
                let newest = block == 0 ? 2000 : 1900 + block
                if (try? p.get().page) != wpage(block << 32 | newest) { wrong += 1 }
            }
            return (refused, wrong, try c.tenantStatus(tenantA).lastRecordLsn)
        }
        #expect(outcome.0 == 0, "puts refused")
        #expect(outcome.1 == 0, "pages not as stored")
        #expect(outcome.2 == 2000)
        #expect(await server.stop() == 0)
    }

    @Test func aConnectionThatFailsSaysWhyAndStaysClosed() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let socket = dir.socket
        try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: socket, timeout: .seconds(30))
            try c.createTenant(tenantA)
            try c.putRecords(tenant: tenantA, [wimage(1, 1)])
        }
        // No byte for longer than the timeout: the call fails, and so does the next, with the same error (its answer could be the old one's).
        let timedOut = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: socket, timeout: .milliseconds(300))
            let t0 = ContinuousClock.now
            let first = Result { () throws(ClientError) in try c.getPage(tenant: tenantA, key: wkey(1), lsn: 1_000_000, waitMs: 5000) }
            let took = ContinuousClock.now - t0
            let second = Result { () throws(ClientError) in try c.getPage(tenant: tenantA, key: wkey(1)) }
            return (first, took, second)
        }
        guard case .failure(.timedOut(milliseconds: 300)) = timedOut.0 else {
            Issue.record("a wait beyond the timeout: \(timedOut.0)")
            return
        }
        #expect(timedOut.1 < .seconds(3))
        guard case .failure(.timedOut(milliseconds: 300)) = timedOut.2 else {
            Issue.record("the call after a timeout: \(timedOut.2)")
            return
        }
        // An answer above the connection's frame limit closes it, with the sizes in the error.
        let tooLarge = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: socket, maxFrameBytes: 4096)
            return Result { () throws(ClientError) in try c.getPage(tenant: tenantA, key: wkey(1)) }
        }
        guard case .failure(.unexpectedResponse(let why)) = tooLarge, why.contains("4096") else {
            Issue.record("an 8 KiB page on a 4 KiB limit: \(tooLarge)")
            return
        }
        // The server killed while a batch waits: every request in it fails with connectionClosed.
        let killer = Task {
            try await Task.sleep(for: .milliseconds(300))
            return await server.stop(SIGKILL)
        }
        let batch = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: socket)
            return c.getPages(tenant: tenantA, keys: [wkey(1), wkey(1)], lsn: 1_000_000, waitMs: 10_000)
        }
        _ = try await killer.value
        for r in batch {
            guard case .failure(.connectionClosed) = r else {
                Issue.record("a batch whose server died: \(r)")
                continue
            }
        }
        // Nobody listening: the error names the socket.
        let missing = dir.path + "/nobody.sock"
        do {
            _ = try LayerGateConnection(socketPath: missing)
            Issue.record("connected to a socket that does not exist")
        } catch {
            guard case .transport(let why) = error, why.contains(missing) else {
                Issue.record("connecting to nothing: \(error)")
                return
            }
        }
    }
}

/// A peer that is not layergated: each answer below is what one connection
/// gets after its first request, and each must end in an error (a duplicate
/// answer: the next call's), never a trap or a hang, with either client.
@Suite("the Swift clients against a hostile peer")
struct HostilePeerClientTests {
    @Test(arguments: HostileAnswer.allCases)
    func everyBadAnswerIsAnErrorAndClosesTheBlockingConnection(_ answer: HostileAnswer) async throws {
        let (dir, peer, path) = try Self.peer(answering: answer)
        defer { _ = (dir, peer) }
        let outcome = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: path, timeout: .seconds(10), maxFrameBytes: 1 << 20)
            let first = Result { () throws(ClientError) in try c.getPage(tenant: tenantA, key: wkey(1)) }
            let second = Result { () throws(ClientError) in try c.getPage(tenant: tenantA, key: wkey(1)) }
            return (first, second)
        }
        answer.check(outcome.0, frameLimitError: { if case .unexpectedResponse(let why) = $0 { why.contains("limit") } else { false } })
        answer.checkTheCallAfter(outcome.0, outcome.1)
    }

    /// A fake peer on a socket of its own that answers one connection's first request with `answer`.
    static func peer(answering answer: HostileAnswer) throws -> (ServerDir, FakePeer, String) {
        let dir = ServerDir()
        let path = dir.path + "/hostile.sock"
        let peer = try FakePeer(path: path)
        peer.serveOne(answering: answer.bytes)
        return (dir, peer, path)
    }

    /// Before, the async client ignored an answer under an id nobody waited
    /// for, and its call waited for ever.
    @Test(arguments: HostileAnswer.allCases)
    func everyBadAnswerIsAnErrorAndClosesTheAsyncClient(_ answer: HostileAnswer) async throws {
        let (dir, peer, path) = try Self.peer(answering: answer)
        defer { _ = (dir, peer) }
        let c = try await LayerGateClient.connect(socketPath: path, timeout: .seconds(10), maxFrameBytes: 1 << 20)
        let first = await c.getPages(tenant: tenantA, keys: [wkey(1)])[0]
        answer.check(first, frameLimitError: { if case .unexpectedResponse(let why) = $0 { why.contains("limit") } else { false } })
        let second = await c.getPages(tenant: tenantA, keys: [wkey(1)])[0]
        answer.checkTheCallAfter(first, second)
        await c.close()
    }

    /// The server refuses the connection while the client is still writing a
    /// long batch: the client must report the refusal it was sent, not the
    /// broken pipe it met writing (it did, 7 runs in 10, before).
    @Test func aRefusalInTheMiddleOfALongBatchIsWhatTheBatchReports() async throws {
        let dir = ServerDir()
        let path = dir.path + "/refusing.sock"
        let peer = try FakePeer(path: path)
        peer.serveOne(answering: HostileAnswer.refusal.bytes)
        let results = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: path, token: String(repeating: "t", count: 2000), timeout: .seconds(10))
            return c.getPages(tenant: tenantA, keys: (0..<5000).map { wkey(UInt32($0)) })
        }
        let refused = results.filter { if case .failure(.server(.resourceExhausted, _)) = $0 { true } else { false } }.count
        #expect(refused == 5000, "\(results.first.map { "\($0)" } ?? "")")
        // The async client, whose loop meets the broken pipe while it waits for room to write.
        let asyncPeer = try FakePeer(path: dir.path + "/refusing2.sock")
        asyncPeer.serveOne(answering: HostileAnswer.refusal.bytes)
        let c = try await LayerGateClient.connect(socketPath: dir.path + "/refusing2.sock", token: String(repeating: "t", count: 2000),
                                                  timeout: .seconds(10))
        let asyncResults = await c.getPages(tenant: tenantA, keys: (0..<5000).map { wkey(UInt32($0)) })
        let asyncRefused = asyncResults.filter { if case .failure(.server(.resourceExhausted, _)) = $0 { true } else { false } }.count
        #expect(asyncRefused == 5000, "async: \(asyncResults.first.map { "\($0)" } ?? "")")
        await c.close()
        withExtendedLifetime((peer, asyncPeer)) {}
    }

    /// A server that stops reading but keeps the connection open (`SHUT_RD`):
    /// a request meets EPIPE, and no answer will ever come. Both clients, with
    /// no timeout, fail the call at once; the async one waited for ever.
    @Test func aPeerThatStopsReadingButStaysOpenFailsBothClients() async throws {
        let dir = ServerDir()
        let blockingPeer = try FakePeer(path: dir.path + "/deaf1.sock")
        let shut1 = blockingPeer.stopReadingOnce(holdingFor: 20)
        let path1 = dir.path + "/deaf1.sock"
        let blocking = await within(.seconds(10)) {
            await onThreadResult { () throws(ClientError) in
                let c = try LayerGateConnection(socketPath: path1)
                shut1.wait()
                return try c.getPage(tenant: tenantA, key: wkey(1))
            }
        }
        guard case .failure(.connectionClosed)? = blocking else {
            Issue.record("blocking: \(String(describing: blocking))")
            return
        }
        let asyncPeer = try FakePeer(path: dir.path + "/deaf2.sock")
        let shut2 = asyncPeer.stopReadingOnce(holdingFor: 20)
        let c = try await LayerGateClient.connect(socketPath: dir.path + "/deaf2.sock")
        _ = await onThreadResult { () throws(ClientError) in shut2.wait() }
        let answer = await within(.seconds(10)) { await c.getPages(tenant: tenantA, keys: [wkey(1), wkey(2)]) }
        #expect(answer.map { $0.map { if case .failure(.connectionClosed) = $0 { true } else { false } } } == [true, true],
                "async: \(String(describing: answer))")
        await c.close()
        withExtendedLifetime((blockingPeer, asyncPeer)) {}
    }

    @Test func aPeerThatNeverAnswersTimesOutBothClients() async throws {
        let dir = ServerDir()
        let path = dir.path + "/silent.sock"
        let peer = try FakePeer(path: path)
        peer.serveOne(answering: nil)
        let t0 = ContinuousClock.now
        let blocking = try await onThread { () throws(ClientError) in
            let c = try LayerGateConnection(socketPath: path, timeout: .milliseconds(300))
            return Result { () throws(ClientError) in try c.getPage(tenant: tenantA, key: wkey(1)) }
        }
        guard case .failure(.timedOut(milliseconds: 300)) = blocking else {
            Issue.record("blocking: \(blocking)")
            return
        }
        let silent2 = try FakePeer(path: dir.path + "/silent2.sock")
        silent2.serveOne(answering: nil)
        let c = try await LayerGateClient.connect(socketPath: dir.path + "/silent2.sock", timeout: .milliseconds(300))
        let answer = await c.getPages(tenant: tenantA, keys: [wkey(1), wkey(2)])
        for a in answer {
            guard case .failure(.timedOut(milliseconds: 300)) = a else {
                Issue.record("async: \(a)")
                return
            }
        }
        await c.close()
        #expect(ContinuousClock.now - t0 < .seconds(5))
    }

    /// The timeout is for a server that says nothing: an answer that comes a
    /// byte at a time, each within the timeout, is waited for by both clients
    /// (the async client counted only whole answers, and gave up).
    @Test func anAnswerThatTricklesInIsWaitedForByBothClients() async throws {
        let answer = Wire.frame(Wire.encode(Wire.Response(requestId: 1, body: .createTenant(Wire.CreateTenantResponse()))))
        #expect(answer.count * 150 > 300, "the whole answer takes longer than the timeout")
        let dir = ServerDir()
        let blockingPeer = try FakePeer(path: dir.path + "/trickle1.sock")
        blockingPeer.serveOne(answering: answer, aByteEvery: 0.15)
        let path1 = dir.path + "/trickle1.sock"
        let blocking = await onThreadResult { () throws(ClientError) in
            try LayerGateConnection(socketPath: path1, timeout: .milliseconds(300)).createTenant(tenantA)
        }
        if case .failure(let e) = blocking { Issue.record("blocking: \(e)") }
        let asyncPeer = try FakePeer(path: dir.path + "/trickle2.sock")
        asyncPeer.serveOne(answering: answer, aByteEvery: 0.15)
        let c = try await LayerGateClient.connect(socketPath: dir.path + "/trickle2.sock", timeout: .milliseconds(300))
        do { try await c.createTenant(tenantA) } catch { Issue.record("async: \(error)") }
        await c.close()
        withExtendedLifetime((blockingPeer, asyncPeer)) {}
    }

    /// A `Pending` is a value: two tasks may await the same answer. Before,
    /// the second waiter took the first one's place, and the first waited for ever.
    @Test func twoTasksAwaitingOnePendingAnswerBothGetIt() async throws {
        let answer = Wire.frame(Wire.encode(Wire.Response(requestId: 1, body: .createTenant(Wire.CreateTenantResponse()))))
        let dir = ServerDir()
        let peer = try FakePeer(path: dir.path + "/slow.sock")
        peer.serveOne(answering: answer, aByteEvery: 0.05)  // both wait before it is whole
        let c = try await LayerGateClient.connect(socketPath: dir.path + "/slow.sock", timeout: .seconds(10))
        let pending = c.send(.createTenant(Wire.CreateTenantRequest(tenantId: tenantA)))
        let both = await within(.seconds(10)) {
            async let first = pending.response()
            async let second = pending.response()
            return [try? await first, try? await second]
        }
        #expect(both == [.createTenant(Wire.CreateTenantResponse()), .createTenant(Wire.CreateTenantResponse())])
        // And once answered, a third await gets it at once.
        #expect(try await pending.response() == .createTenant(Wire.CreateTenantResponse()))
        await c.close()
        withExtendedLifetime(peer) {}
    }

    /// A server whose listen backlog is full answers connect with EAGAIN; with a
    /// timeout, the blocking client retries until it, then says so.
    @Test func aServerThatNeverAcceptsTimesOutTheConnect() async throws {
        let dir = ServerDir()
        let path = dir.path + "/full.sock"
        let full = try FullBacklog(path: path)
        let t0 = ContinuousClock.now
        let outcome = await onThreadResult { () throws(ClientError) in
            _ = try LayerGateConnection(socketPath: path, timeout: .milliseconds(300))
        }
        guard case .failure(.timedOut) = outcome else {
            Issue.record("connect to a full backlog: \(outcome)")
            return
        }
        let took = ContinuousClock.now - t0
        #expect(took >= .milliseconds(300) && took < .seconds(3), "retried for the timeout, no longer: \(took)")
        withExtendedLifetime(full) {}
    }
}

/// A listening socket whose backlog (0: one connection may wait) is full of
/// connections nobody accepts: a connect to it answers EAGAIN.
final class FullBacklog {
    let peer: FakePeer
    private let fillers: [Int32]

    init(path: String) throws {
        peer = try FakePeer(path: path, backlog: 0)
        fillers = (0..<4).compactMap { _ in try? FakePeer.connectNonBlocking(path) }
    }

    deinit { for f in fillers { close(f) } }
}

extension HostileAnswer {
    /// What a client must report for this answer to its first request.
    func check<T>(_ outcome: Result<T, ClientError>, frameLimitError: (ClientError) -> Bool,
                  sourceLocation: SourceLocation = #_sourceLocation) {
        switch (self, outcome) {
        case (.lengthAboveTheLimit, .failure(let e)) where frameLimitError(e): break
        case (.notAResponse, .failure(.unexpectedResponse)), (.answerToAnotherRequest, .failure(.unexpectedResponse)),
             (.tornFrame, .failure(.connectionClosed)), (.nothing, .failure(.connectionClosed)):
            break
        case (.refusal, .failure(.server(let code, _))): #expect(code == .resourceExhausted, sourceLocation: sourceLocation)
        case (.pageOfTheWrongSize, .failure(.unexpectedResponse(let why))): #expect(why.contains("100 bytes"), sourceLocation: sourceLocation)
        case (.duplicateAnswer, .success): break  // its own answer came first
        default: Issue.record("\(self): \(outcome)", sourceLocation: sourceLocation)
        }
    }

    /// What the blocking client's next call on the same connection reports:
    /// the error that ended the connection, even where the call that met it
    /// had all its answers (a duplicate after the last one); a page of the
    /// wrong size is an answer's fault, not the stream's, and the peer then
    /// hung up.
    func checkTheCallAfter<T, U>(_ first: Result<T, ClientError>, _ second: Result<U, ClientError>,
                                 sourceLocation: SourceLocation = #_sourceLocation) {
        switch (self, first, second) {
        case (.duplicateAnswer, _, .failure(.unexpectedResponse(let why))) where why.contains("not waiting"): break
        case (.pageOfTheWrongSize, _, .failure(.connectionClosed)): break
        case (.duplicateAnswer, _, _), (.pageOfTheWrongSize, _, _): Issue.record("\(self): the call after it: \(second)", sourceLocation: sourceLocation)
        case (_, .failure(let ended), .failure(let after)) where ended == after: break
        default: Issue.record("\(self): the call after \(first): \(second)", sourceLocation: sourceLocation)
        }
    }
}

enum HostileAnswer: CaseIterable, Sendable {
    case lengthAboveTheLimit, notAResponse, answerToAnotherRequest, tornFrame, nothing, refusal, duplicateAnswer, pageOfTheWrongSize

    var bytes: [UInt8] {
        switch self {
        case .lengthAboveTheLimit: return [0xFF, 0xFF, 0xFF, 0xF0] + [UInt8](repeating: 7, count: 100)
        case .notAResponse: return Wire.frame([0xFF, 0xFF, 0xFF, 0x0F, 0x08])
        case .answerToAnotherRequest:
            return Wire.frame(Wire.encode(Wire.Response(requestId: 4242, body: .createTenant(Wire.CreateTenantResponse()))))
        case .tornFrame: return Array(Wire.frame(Wire.encode(Wire.Response(requestId: 1, body: .createTenant(Wire.CreateTenantResponse())))).dropLast(2))
        case .nothing: return []
        case .refusal:
            return Wire.frame(Wire.encode(Wire.Response(requestId: 0, body: .error(Wire.Error(code: .resourceExhausted, message: "too many connections")))))
        case .duplicateAnswer:
            let page = Wire.frame(Wire.encode(Wire.Response(requestId: 1, body: .getPage(Wire.GetPageResponse(page: [UInt8](repeating: 5, count: 8192), lsn: 3)))))
            return page + page
        case .pageOfTheWrongSize:
            return Wire.frame(Wire.encode(Wire.Response(requestId: 1, body: .getPage(Wire.GetPageResponse(page: [UInt8](repeating: 5, count: 100), lsn: 3)))))
        }
    }
}

/// A listening Unix socket that plays the server for one connection.
final class FakePeer: Sendable {
    let fd: Int32
    init(path: String, backlog: Int32 = 4) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = Self.address(path)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0, listen(fd, backlog) == 0 else { throw MissingBinary(name: "a listening socket at \(path)") }
    }
    deinit { close(fd) }

    /// Accepts one connection, reads what comes first, sends `bytes` and
    /// closes; with nil, reads and never answers (until the client hangs up).
    func serveOne(answering bytes: [UInt8]?, aByteEvery gap: TimeInterval? = nil) {
        let listener = fd
        Thread {
            let c = accept(listener, nil, nil)
            guard c >= 0 else { return }
            var sink = [UInt8](repeating: 0, count: 4096)
            guard let bytes else {
                while sink.withUnsafeMutableBytes({ read(c, $0.baseAddress, $0.count) }) > 0 {}
                close(c)
                return
            }
            _ = sink.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
            if let gap {
                for b in bytes {
                    Thread.sleep(forTimeInterval: gap)
                    _ = withUnsafeBytes(of: b) { send(c, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
                }
            } else {
                _ = bytes.withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            close(c)
        }.start()
    }

    /// Accepts one connection, shuts its reading side, and closes it after
    /// `seconds`; the semaphore is signalled once the reading side is shut
    /// (a request sent before that is read later, as by a silent server).
    func stopReadingOnce(holdingFor seconds: TimeInterval) -> DispatchSemaphore {
        let listener = fd
        let shut = DispatchSemaphore(value: 0)
        Thread {
            let c = accept(listener, nil, nil)
            guard c >= 0 else { return }
            shutdown(c, Int32(SHUT_RD))
            shut.signal()
            Thread.sleep(forTimeInterval: seconds)
            close(c)
        }.start()
        return shut
    }

    static func connectNonBlocking(_ path: String) throws -> Int32 {
        let c = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var addr = address(path)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else {
            close(c)
            throw MissingBinary(name: "a connection to \(path)")
        }
        return c
    }

    private static func address(_ path: String) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { dst in for (i, b) in path.utf8.enumerated() { dst[i] = b } }
        return addr
    }
}

