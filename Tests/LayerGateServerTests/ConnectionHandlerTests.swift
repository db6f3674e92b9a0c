@testable import LayerGateServer
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
        let dir = ServerDir()
        let manager = try TenantManager(dataDirectory: dir.data, cache: PageCache(capacity: 16), failpoints: Failpoints())
        let dispatcher = Dispatcher(manager: manager, config: ServerConfig(), failpoints: Failpoints())
        weak var gone: ConnectionHandler?
        do {
            let handler = ConnectionHandler(
                dispatcher: dispatcher, peer: PeerIdentity(uid: 0, pid: 1), limits: ServerLimits(), maxFrameBytes: 16 << 20,
                budgets: InflightBudgets(capacity: 1 << 20), tracker: InFlightTracker(), logger: Logger(label: "test"))
            gone = handler
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(handler)
            try await channel.connect(to: SocketAddress(unixDomainSocketPath: "/peer")).get()
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
            let answer = dispatcher.handleInline(g, right: right, grant: nil, peer: PeerIdentity(uid: 0, pid: 1), into: &out)
            guard case .response(let r)? = answer, case .error(let e)? = r.body else {
                Issue.record("\(right): answered \(String(describing: answer)) with \(out.readableBytes) bytes")
                continue
            }
            #expect(e.code == .permissionDenied && out.readableBytes == 0)
        }
        // The right that covers it serves it.
        var out = ByteBufferAllocator().buffer(capacity: 0)
        guard case .frame? = dispatcher.handleInline(g, right: .tenant(high: other.high, low: other.low), grant: nil,
                                                     peer: PeerIdentity(uid: 0, pid: 1), into: &out) else {
            Issue.record("the tenant's own right was not served")
            return
        }
        await manager.shutdown()
    }
}
