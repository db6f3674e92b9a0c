import LayerGateWire
import NIOCore
import NIOPosix
import Synchronization

/// What a call to the server can fail with.
public enum ClientError: Error, Equatable, CustomStringConvertible {
    /// The server answered with an `Error`: its code and message.
    case server(code: Wire.ErrorCode, message: String)
    /// The connection closed before the answer came.
    case connectionClosed
    /// The answer's body was not the kind the request asks for.
    case unexpectedResponse(String)

    public var description: String {
        switch self {
        case .server(let code, let message): return "\(code.name): \(message)"
        case .connectionClosed: return "the connection to layergated closed"
        case .unexpectedResponse(let s): return "unexpected response: \(s)"
        }
    }
}

/// One connection to layergated. Calls may run concurrently: they are
/// pipelined on the connection and matched to responses by request id.
public final class LayerGateClient: Sendable {
    private let channel: Channel
    private let nextId = Atomic<UInt64>(1)
    private let ownsGroup: MultiThreadedEventLoopGroup?
    /// Sent with every request (a JWT; "" when the server checks none).
    public let token: String

    private init(channel: Channel, ownsGroup: MultiThreadedEventLoopGroup?, token: String) {
        self.channel = channel
        self.ownsGroup = ownsGroup
        self.token = token
    }

    /// - Parameter token: the JWT this client sends with every request, when
    ///   the server checks tokens (`layergate token` makes one).
    public static func connect(socketPath: String, token: String = "", maxFrameBytes: Int = defaultMaxFrameBytes,
                               group: EventLoopGroup? = nil) async throws -> LayerGateClient {
        let owned = group == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let bootstrap = ClientBootstrap(group: group ?? owned!)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrameBytes)),
                        MessageToByteHandler(FrameEncoder()),
                        PipelinedResponses(),
                    ])
                }
            }
        do {
            let channel = try await bootstrap.connect(unixDomainSocketPath: socketPath).get()
            return LayerGateClient(channel: channel, ownsGroup: owned, token: token)
        } catch {
            try? await owned?.shutdownGracefully()
            throw error
        }
    }

    public func close() async {
        try? await channel.close()
        try? await ownsGroup?.shutdownGracefully()
    }

    /// Sends one request and returns the body of its response; an `Error`
    /// response throws `ClientError.server`. `authToken` overrides the client's token.
    public func call(_ body: Wire.Request.Body, authToken: String? = nil) async throws -> Wire.Response.Body {
        try await send(body, authToken: authToken).response()
    }

    /// A request sent and not answered yet (`send`).
    public struct Pending: Sendable {
        fileprivate let slot: ResponseSlot

        /// The body of its response; an `Error` response throws `ClientError.server`.
        public func response() async throws -> Wire.Response.Body {
            let response = try await slot.promise.futureResult.get()
            switch response.body {
            case .error(let e)?: throw ClientError.server(code: e.code, message: e.message)
            case let b?: return b
            case nil: throw ClientError.unexpectedResponse("a response without a body")
            }
        }
    }

    /// Sends one request without waiting for its answer. Requests sent one
    /// after another from one task leave in that order, and the server
    /// applies puts in the order they arrive on a connection: a caller can
    /// keep many puts in flight and await their answers later.
    public func send(_ body: Wire.Request.Body, authToken: String? = nil) -> Pending {
        let authToken = authToken ?? token
        let id = nextId.add(1, ordering: .relaxed).oldValue
        let slot = ResponseSlot(channel.eventLoop.makePromise(of: Wire.Response.self))
        // A write that fails (the connection is gone) must fail the call, or it would wait forever.
        channel.writeAndFlush(PipelinedResponses.Outgoing(request: Wire.Request(requestId: id, authToken: authToken, body: body),
                                                          slot: slot)).whenFailure { slot.fail($0) }
        return Pending(slot: slot)
    }

    // MARK: One method per request

    public func createTenant(_ id: String) async throws {
        guard case .createTenant = try await call(.createTenant(Wire.CreateTenantRequest(tenantId: id))) else { throw mismatch("CreateTenant") }
    }

    public func getPage(tenant: String, key: Wire.PageKey, lsn: UInt64? = nil, waitMs: UInt32 = 0) async throws -> Wire.GetPageResponse {
        let r = Wire.GetPageRequest(tenantId: tenant, key: key, lsn: lsn ?? 0, latest: lsn == nil, waitMs: waitMs)
        guard case .getPage(let p) = try await call(.getPage(r)) else { throw mismatch("GetPage") }
        return p
    }

    @discardableResult
    public func putRecords(tenant: String, _ records: [Wire.Record]) async throws -> UInt64 {
        guard case .putRecords(let p) = try await call(.putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: records)))
        else { throw mismatch("PutRecords") }
        return p.lastRecordLsn
    }

    public func compact(tenant: String, forceImageLayers: Bool = false) async throws -> Wire.CompactResponse {
        guard case .compact(let p) = try await call(.compact(Wire.CompactRequest(tenantId: tenant, forceImageLayers: forceImageLayers)))
        else { throw mismatch("Compact") }
        return p
    }

    public func resetTenant(_ id: String, dropCache: Bool = false) async throws -> Wire.ResetTenantResponse {
        guard case .resetTenant(let p) = try await call(.resetTenant(Wire.ResetTenantRequest(tenantId: id, dropCache: dropCache)))
        else { throw mismatch("ResetTenant") }
        return p
    }

    public func tenantStatus(_ id: String) async throws -> Wire.TenantStatusResponse {
        guard case .tenantStatus(let p) = try await call(.tenantStatus(Wire.TenantStatusRequest(tenantId: id))) else { throw mismatch("TenantStatus") }
        return p
    }

    public func listTenants() async throws -> [String] {
        guard case .listTenants(let p) = try await call(.listTenants(Wire.ListTenantsRequest())) else { throw mismatch("ListTenants") }
        return p.tenantIds
    }

    public func serverStatus() async throws -> Wire.ServerStatusResponse {
        guard case .serverStatus(let p) = try await call(.serverStatus(Wire.ServerStatusRequest())) else { throw mismatch("ServerStatus") }
        return p
    }

    public func configureFailpoints(_ failpoints: [Wire.Failpoint]) async throws {
        guard case .configureFailpoints = try await call(.configureFailpoints(Wire.ConfigureFailpointsRequest(failpoints: failpoints)))
        else { throw mismatch("ConfigureFailpoints") }
    }

    private func mismatch(_ what: String) -> ClientError { .unexpectedResponse("the answer to \(what) has another kind of body") }
}

/// Writes requests and completes each one's promise when the response with
/// its id arrives, in whatever order the server answers.
final class PipelinedResponses: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Outgoing
    typealias OutboundOut = ByteBuffer

    struct Outgoing {
        var request: Wire.Request
        var slot: ResponseSlot
    }

    private var pending: [UInt64: ResponseSlot] = [:]

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let out = unwrapOutboundIn(data)
        pending[out.request.requestId] = out.slot
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: Wire.encode(out.request))), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let response = try? frame.withUnsafeReadableBytes({ try Wire.decodeResponse($0) }) else {
            failAll(ClientError.unexpectedResponse("a frame that is not a Response"))
            context.close(promise: nil)
            return
        }
        if let p = pending.removeValue(forKey: response.requestId) {
            p.succeed(response)
        } else if case .error(let e)? = response.body {
            // Request id 0: the server rejected the connection's bytes and is closing it.
            failAll(ClientError.server(code: e.code, message: e.message))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: Error) {
        let all = pending
        pending = [:]
        for p in all.values { p.fail(error) }
    }
}

/// A call's response promise, completed exactly once whoever gets there
/// first: the response, a failed write, or the connection closing.
final class ResponseSlot: Sendable {
    let promise: EventLoopPromise<Wire.Response>
    private let done = Mutex(false)

    init(_ promise: EventLoopPromise<Wire.Response>) { self.promise = promise }

    func succeed(_ r: Wire.Response) { if claim() { promise.succeed(r) } }
    func fail(_ e: Error) { if claim() { promise.fail(e) } }

    private func claim() -> Bool {
        done.withLock { d in
            if d { return false }
            d = true
            return true
        }
    }
}
