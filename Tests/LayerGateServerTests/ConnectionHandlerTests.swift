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
