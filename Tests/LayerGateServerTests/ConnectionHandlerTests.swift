@testable import LayerGateServer
import LayerGateClient
import LayerGateStorage
import LayerGateWire
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// The connection handler in process, on an `EmbeddedChannel`: what a
/// connection leaves behind once it is gone.
@Suite struct ConnectionHandlerTests {
    /// A handler kept its context, which holds the handler: every connection
    /// ever made stayed in memory (about 4.6 KiB each, its decode arena included).
    @Test(arguments: ["closed by the peer", "after a request"])
    func aClosedConnectionFreesItsHandler(how: String) async throws {
        try await onOneThread {
            let dir = ServerDir()
            let manager = try TenantManager(dataDirectory: dir.data, cache: PageCache(capacity: 16), failpoints: Failpoints())
            let dispatcher = Dispatcher(manager: manager, config: ServerConfig(), failpoints: Failpoints())
            weak var gone: ConnectionHandler?
            do {
                let handler = ConnectionHandler(ConnectionSettings(
                    dispatcher: dispatcher, limits: ServerLimits(), maxFrameBytes: 16 << 20, budgets: InflightBudgets(capacity: 1 << 20),
                    tracker: InFlightTracker(), logger: Logger(label: "test")), peer: PeerIdentity(uid: 0, pid: 1))
                gone = handler
                let channel = EmbeddedChannel()
                try channel.pipeline.syncOperations.addHandler(handler)
                channel.connect(to: try SocketAddress(unixDomainSocketPath: "/peer"), promise: nil)
                if how == "after a request" {
                    // Not a tenant: answered inline, on the event loop, with an error for request 7.
                    let frame = Wire.frame(Wire.encode(Wire.Request(requestId: 7, body: .getPage(
                        Wire.GetPageRequest(tenantId: "not a tenant", key: wkey(1), lsn: 1)))))
                    try channel.writeInbound(channel.allocator.buffer(bytes: frame))
                    let answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
                    let bytes = try #require(answer.getBytes(at: answer.readerIndex, length: answer.readableBytes))
                    let response = try Wire.decodeResponse(Array(bytes.dropFirst(4)))
                    #expect(response.requestId == 7)
                    guard case .error(let e)? = response.body else { Issue.record("expected an error, got \(response)"); return }
                    #expect(e.code == .invalidArgument)
                }
                _ = try channel.finish(acceptAlreadyClosed: true)
            }
            #expect(gone == nil, "the handler outlived its connection")
            await manager.shutdown()
        }
    }
}

/// A GetPage read in place is refused when the connection's right says so,
/// whatever grant there is to word it: with no grant at hand (the token cache
/// had let the token go, it keeps eight), `authorize` alone would have let the
/// read through as on a server without tokens. An adversarial run saw pages of
/// other tenants served that way, under 2,000 pipelined requests with 13 tokens.
@Suite struct InlineRightTests {
    @Test func aRefusedRightIsRefusedWithoutAGrant() async throws {
        let dir = ServerDir()
        let manager = try TenantManager(dataDirectory: dir.data, cache: PageCache(capacity: 16), failpoints: Failpoints())
        let dispatcher = Dispatcher(manager: manager, config: ServerConfig(), failpoints: Failpoints())
        let mine = try TenantId(parsing: tenantA)
        let other = try TenantId(parsing: "fedcba9876543210fedcba9876543210")
        _ = try await manager.create(other)
        _ = try await manager.tenant(other).put([Record(key: PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, wireFork: 0, block: 1),
                                                        lsn: Lsn(10), value: .image([UInt8](repeating: 7, count: pageSize)))])
        let bytes = Wire.encode(Wire.Request(requestId: 9, body: .getPage(Wire.GetPageRequest(
            tenantId: other.description, key: wkey(1), latest: true))))
        let g = try #require(bytes.withUnsafeBytes { Wire.readGetPageInPlace($0, knownToken: nil, maxMessages: 100) })
        for right in [Dispatcher.ReadRight.tenant(high: mine.high, low: mine.low), .refused] {
            var out = ByteBufferAllocator().buffer(capacity: 0)
            let answer = dispatcher.handleInline(g, right: right, grant: nil, peer: PeerIdentity(uid: 0, pid: 1), since: .now(), into: &out)
            guard case .response(let r)? = answer, case .error(let e)? = r.body else {
                Issue.record("\(right): answered \(String(describing: answer)) with \(out.readableBytes) bytes")
                continue
            }
            #expect(e.code == .permissionDenied && out.readableBytes == 0)
        }
        // The right that covers it serves it.
        var out = ByteBufferAllocator().buffer(capacity: 0)
        guard case .frame? = dispatcher.handleInline(g, right: .tenant(high: other.high, low: other.low), grant: nil,
                                                     peer: PeerIdentity(uid: 0, pid: 1), since: .now(), into: &out) else {
            Issue.record("the tenant's own right was not served")
            return
        }
        await manager.shutdown()
    }
}

/// The handler's own paths, in process: a cached page answered on the event
/// loop within the call that read its frame, bad frames, and back-pressure.
@Suite struct ConnectionHandlerPathTests {
    /// A server's pieces over one temp directory, with tenant A holding block 1 at LSN 10.
    struct Rig {
        let dir = ServerDir()
        let manager: TenantManager
        let dispatcher: Dispatcher
        let page = [UInt8](repeating: 7, count: pageSize)

        init() async throws {
            manager = try TenantManager(dataDirectory: dir.data, cache: PageCache(capacity: 64), failpoints: Failpoints())
            dispatcher = Dispatcher(manager: manager, config: ServerConfig(), failpoints: Failpoints())
            let id = try TenantId(parsing: tenantA)
            _ = try await manager.create(id)
            let t = try manager.tenant(id)
            _ = try await t.put([Record(key: PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, wireFork: 0, block: 1),
                                        lsn: Lsn(10), value: .image(page))])
        }

        func channel(peerUid: UInt32 = 0, maxFrameBytes: Int = 1 << 20, limits: ServerLimits = ServerLimits()) throws -> EmbeddedChannel {
            let handler = ConnectionHandler(ConnectionSettings(
                dispatcher: dispatcher, limits: limits, maxFrameBytes: maxFrameBytes, budgets: InflightBudgets(capacity: 1 << 20),
                tracker: InFlightTracker(), logger: Logger(label: "test")), peer: PeerIdentity(uid: peerUid, pid: 1))
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(handler)
            channel.connect(to: try SocketAddress(unixDomainSocketPath: "/peer"), promise: nil)
            return channel
        }
    }

    static func frame(_ id: UInt64, _ body: Wire.Request.Body?) -> [UInt8] {
        Wire.frame(Wire.encode(Wire.Request(requestId: id, body: body)))
    }

    static func answers(_ channel: EmbeddedChannel) throws -> [Wire.Response] {
        var bytes: [UInt8] = []
        while let b = try channel.readOutbound(as: ByteBuffer.self) { bytes += b.readableBytesView }
        var out: [Wire.Response] = []
        var at = 0
        while at + 4 <= bytes.count {
            let n = Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            out.append(try Wire.decodeResponse(Array(bytes[at + 4..<at + 4 + n])))
            at += 4 + n
        }
        return out
    }

    @Test func aCachedPageIsAnsweredWithinTheReadThatBroughtItsFrame() async throws {
        try await onOneThread {
            let rig = try await Rig()
            let channel = try rig.channel()
            // The page is in memory (not flushed): a cache hit needs no disk and no task.
            let get = Self.frame(5, .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), latest: true)))
            try channel.writeInbound(channel.allocator.buffer(bytes: get + get.map { $0 }))
            let answers = try Self.answers(channel)
            #expect(answers.count == 2, "both answered before writeInbound returned")
            for a in answers {
                guard case .getPage(let p)? = a.body else { Issue.record("\(a)"); continue }
                #expect(a.requestId == 5 && p.page == rig.page && p.lsn == 10)
            }
            _ = try channel.finish(acceptAlreadyClosed: true)
            await rig.manager.shutdown()
        }
    }

    @Test func badFramesGetTheirCodesAndOnlyConnectionErrorsClose() async throws {
        try await onOneThread {
            let rig = try await Rig()
            // A request that is wrong (a tenant the server does not hold): its own id, and the
            // connection stays. (Answered on the event loop; a task's answer would come from
            // another thread, which an EmbeddedChannel cannot take.)
            let c1 = try rig.channel()
            let unknown = Self.frame(3, .getPage(Wire.GetPageRequest(tenantId: "fedcba9876543210fedcba9876543210", key: wkey(1), latest: true)))
            try c1.writeInbound(c1.allocator.buffer(bytes: unknown))
            let a1 = try Self.answers(c1)
            guard case .error(let e1)? = a1.first?.body else { Issue.record("\(a1)"); return }
            #expect(a1.first?.requestId == 3 && e1.code == .tenantNotFound && c1.isActive)
            // Bytes that are not a Request: request id 0, then the connection closes.
            let c2 = try rig.channel()
            try c2.writeInbound(c2.allocator.buffer(bytes: Wire.frame([0xFF, 0xFF, 0xFF])))
            c2.embeddedEventLoop.run()
            let a2 = try Self.answers(c2)
            guard case .error(let e2)? = a2.first?.body else { Issue.record("\(a2)"); return }
            #expect(a2.first?.requestId == 0 && e2.code == .invalidArgument && !c2.isActive)
            // An empty frame: it has no request id of its own to be answered under, so it ends the connection.
            let c4 = try rig.channel()
            try c4.writeInbound(c4.allocator.buffer(bytes: [0, 0, 0, 0]))
            c4.embeddedEventLoop.run()
            let a4 = try Self.answers(c4)
            guard case .error(let e4)? = a4.first?.body else { Issue.record("\(a4)"); return }
            #expect(a4.first?.requestId == 0 && e4.code == .invalidArgument && !c4.isActive)
            // A length over the limit: FRAME_TOO_LARGE before the body arrives, and a close.
            let c3 = try rig.channel(maxFrameBytes: 4096)
            try c3.writeInbound(c3.allocator.buffer(bytes: [0, 0, 0x10, 0x01]))
            c3.embeddedEventLoop.run()
            let a3 = try Self.answers(c3)
            guard case .error(let e3)? = a3.first?.body else { Issue.record("\(a3)"); return }
            #expect(a3.first?.requestId == 0 && e3.code == .frameTooLarge && !c3.isActive)
            _ = try? c1.finish(acceptAlreadyClosed: true)
            await rig.manager.shutdown()
        }
    }

    /// A peer that pipelines frames and then neither reads its answers nor
    /// sends: its frames wait, nothing runs, and it is closed as idle. (It was
    /// kept for good: "idle" required an empty buffer, so 1,024 such peers
    /// could hold every connection slot.)
    @Test func aPeerThatNeverReadsIsClosedAsIdle() async throws {
        try await onOneThread {
            let rig = try await Rig()
            var limits = ServerLimits()
            limits.idleTimeout = .milliseconds(300)
            let channel = try rig.channel(limits: limits)
            channel.isWritable = false
            channel.pipeline.fireChannelWritabilityChanged()
            let get = Self.frame(8, .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), latest: true)))
            try channel.writeInbound(channel.allocator.buffer(bytes: get + get + get))
            try await Task.sleep(for: .milliseconds(400))
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))  // the once-a-second check
            #expect(!channel.isActive, "a peer that reads nothing and sends nothing is idle")
            // One that reads again in time is not.
            let reader = try rig.channel(limits: limits)
            reader.isWritable = false
            reader.pipeline.fireChannelWritabilityChanged()
            try reader.writeInbound(reader.allocator.buffer(bytes: get + get))
            try await Task.sleep(for: .milliseconds(400))
            reader.isWritable = true
            reader.pipeline.fireChannelWritabilityChanged()
            reader.embeddedEventLoop.advanceTime(by: .seconds(1))
            let answered = try Self.answers(reader).count
            #expect(reader.isActive && answered == 2)
            _ = try? channel.finish(acceptAlreadyClosed: true)
            _ = try? reader.finish(acceptAlreadyClosed: true)
            await rig.manager.shutdown()
        }
    }

    /// A connection whose answers are not being read takes no new frame: they
    /// wait in its buffer until the channel is writable again.
    @Test func framesWaitWhileTheChannelIsNotWritable() async throws {
        try await onOneThread {
            let rig = try await Rig()
            let channel = try rig.channel()
            channel.isWritable = false
            channel.pipeline.fireChannelWritabilityChanged()
            let get = Self.frame(8, .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), latest: true)))
            try channel.writeInbound(channel.allocator.buffer(bytes: get + get + get))
            #expect(try Self.answers(channel).isEmpty, "no frame taken while the peer does not read")
            channel.isWritable = true
            channel.pipeline.fireChannelWritabilityChanged()
            #expect(try Self.answers(channel).count == 3, "all three taken once it reads again")
            _ = try channel.finish(acceptAlreadyClosed: true)
            await rig.manager.shutdown()
        }
    }
}

/// The dispatcher alone: rights and answers, without a socket.
@Suite struct DispatcherTests {
    @Test func rightsFollowThePeerAndAnswersFollowTheRequest() async throws {
        let rig = try await ConnectionHandlerPathTests.Rig()
        let d = rig.dispatcher
        let root = PeerIdentity(uid: 0, pid: 1)
        let stranger = PeerIdentity(uid: 4242, pid: 2)
        let put = Wire.Request(requestId: 1, body: .putRecords(Wire.PutRecordsRequest(tenantId: tenantA, records: [wimage(2, 11)])))
        // Another uid may read but not write or administer.
        for request in [put, Wire.Request(requestId: 2, body: .listTenants(Wire.ListTenantsRequest()))] {
            guard case .error(let e)? = await d.handle(request, grant: nil, peer: stranger).body else {
                Issue.record("\(request) was allowed")
                continue
            }
            #expect(e.code == .permissionDenied)
        }
        guard case .getPage(let p)? = await d.handle(Wire.Request(requestId: 3, body: .getPage(
            Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), latest: true))), grant: nil, peer: stranger).body
        else { Issue.record("a read was refused"); return }
        #expect(p.page == rig.page)
        // Root may write; the answer is the tenant's last record LSN.
        guard case .putRecords(let r)? = await d.handle(put, grant: nil, peer: root).body else {
            Issue.record("root's put was refused")
            return
        }
        #expect(r.lastRecordLsn == 11)
        // Bad input: the right code, naming what was wrong.
        let bad = Wire.Request(requestId: 4, body: .getPage(Wire.GetPageRequest(tenantId: "nope", key: wkey(1), latest: true)))
        guard case .error(let e)? = await d.handle(bad, grant: nil, peer: root).body else { Issue.record("accepted"); return }
        #expect(e.code == .invalidArgument && e.message.contains("nope"))
        let missing = Wire.Request(requestId: 5, body: .tenantStatus(Wire.TenantStatusRequest(tenantId: "fedcba9876543210fedcba9876543210")))
        guard case .error(let m)? = await d.handle(missing, grant: nil, peer: root).body else { Issue.record("found"); return }
        #expect(m.code == .tenantNotFound)
        await rig.manager.shutdown()
    }
}

/// Runs `body` on one thread throughout, a loop of its own: an
/// `EmbeddedChannel` must be used (and freed) on the thread that made it
/// (NIO: "EmbeddedEventLoop is not thread-safe", to become a crash), and a
/// test resumes after an `await` on whichever thread of Swift's pool is free;
/// on Linux the main actor too.
private func onOneThread<T>(_ body: () async throws -> T) async throws -> T {
    let loop = ClientLoop()
    do {
        let value = try await withTaskExecutorPreference(loop) { try await body() }
        await loop.shutdown()
        return value
    } catch {
        await loop.shutdown()
        throw error
    }
}
