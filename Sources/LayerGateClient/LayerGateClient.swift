import LayerGateWire
import NIOCore
import NIOPosix
import Synchronization

/// One connection to layergated for async code. Calls may run concurrently:
/// they are pipelined on the connection and matched to responses by request
/// id. A thread that owns its connection gets more round trips per second from
/// `LayerGateConnection` (blocking calls, no event loop between it and the socket).
public final class LayerGateClient: Sendable {
    private let channel: Channel
    private let nextId = Atomic<UInt64>(1)
    /// Sent with every request (a JWT; "" when the server checks none).
    public let token: String

    private init(channel: Channel, token: String) {
        self.channel = channel
        self.token = token
        loopExecutor = LoopTaskExecutor(channel.eventLoop)
    }

    /// - Parameter token: the JWT this client sends with every request, when
    ///   the server checks tokens (`layergate token` makes one).
    /// - Parameter timeout: when requests wait and no byte has come from the
    ///   server for this long, every waiting call fails with `timedOut` and the
    ///   connection closes; also the limit for connecting. Nil waits for ever.
    ///   Give more than the `waitMs` of any GetPage sent on it.
    /// - Parameter group: NIO's shared event loops unless given: connections share
    ///   them rather than each bringing a thread of its own.
    public static func connect(socketPath: String, token: String = "", timeout: Duration? = nil,
                               maxFrameBytes: Int = defaultMaxFrameBytes,
                               group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> LayerGateClient {
        var bootstrap = ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let responses = PipelinedResponses(timeout: timeout)
                    try channel.pipeline.syncOperations.addHandlers([
                        BytesArrived(responses),
                        ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrameBytes)),
                        responses,
                    ])
                }
            }
        if let timeout { bootstrap = bootstrap.connectTimeout(.nanoseconds(timeout.clampedNanoseconds)) }
        let channel = try await bootstrap.connect(unixDomainSocketPath: socketPath).get()
        return LayerGateClient(channel: channel, token: token)
    }

    public func close() async {
        try? await channel.close()
    }

    /// The connection's event loop as an executor. An actor that drives this
    /// connection can run on it (`nonisolated var unownedExecutor:
    /// UnownedSerialExecutor { client.executor.asUnownedSerialExecutor() }`):
    /// `call`, `callMany`, `getPage` and `getPages` then send and resume on the
    /// connection's own thread, without waking another thread for each call.
    public var executor: any SerialExecutor { channel.eventLoop.executor }

    /// The connection's event loop as a task executor: the other way to drive
    /// the connection from its own thread, for code that is not in an actor
    /// (`Task(executorPreference: client.taskExecutor) { … }`, or
    /// `withTaskExecutorPreference`). A call from a task with neither wakes a
    /// thread of Swift's global pool when its answer comes.
    public var taskExecutor: any TaskExecutor { loopExecutor }
    private let loopExecutor: LoopTaskExecutor

    /// Sends one request and returns the body of its response; an `Error`
    /// response throws `ClientError.server`. `authToken` overrides the client's token.
    nonisolated(nonsending)
    public func call(_ body: Wire.Request.Body, authToken: String? = nil) async throws(ClientError) -> Wire.Response.Body {
        try await send(body, authToken: authToken).response()
    }

    /// A request sent and not answered yet (`send`).
    public struct Pending: Sendable {
        fileprivate let slot: ResponseSlot
        fileprivate let loop: LoopTaskExecutor

        /// The body of its response; an `Error` response throws `ClientError.server`.
        nonisolated(nonsending)
        public func response() async throws(ClientError) -> Wire.Response.Body {
            guard let answer = await slot.answers(resumingOn: loop).first else { throw .connectionClosed }
            return try answer.get()
        }
    }

    /// Sends one request without waiting for its answer. Requests sent one
    /// after another from one task leave in that order, and the server
    /// applies puts in the order they arrive on a connection: a caller can
    /// keep many puts in flight and await their answers later.
    public func send(_ body: Wire.Request.Body, authToken: String? = nil) -> Pending {
        Pending(slot: submit([body], authToken: authToken), loop: loopExecutor)
    }

    /// Sends every request pipelined and returns each one's outcome, in the order of
    /// `bodies`. The batch costs one hop to the event loop and one wake-up of the
    /// caller, whatever its size.
    nonisolated(nonsending)
    public func callMany(_ bodies: [Wire.Request.Body], authToken: String? = nil) async -> [Result<Wire.Response.Body, ClientError>] {
        guard !bodies.isEmpty else { return [] }
        return await submit(bodies, authToken: authToken).answers(resumingOn: loopExecutor)
    }

    private func submit(_ bodies: [Wire.Request.Body], authToken: String?) -> ResponseSlot {
        // A closed connection's loop may be shut down, and then a task given to it is dropped: the call would wait for ever.
        guard channel.isActive else { return ResponseSlot(count: bodies.count, failing: .connectionClosed) }
        let authToken = authToken ?? token
        let first = nextId.add(UInt64(bodies.count), ordering: .relaxed).oldValue
        let slot = ResponseSlot(count: bodies.count, promise: channel.eventLoop.makePromise())
        let requests = bodies.enumerated().map { i, body in
            Wire.Request(requestId: first &+ UInt64(i), authToken: authToken, body: body)
        }
        let writeAll: @Sendable () -> Void = { [channel] in
            for (i, request) in requests.enumerated() {
                // A write that fails (the connection is gone) must fail its request, or it would wait forever.
                channel.write(PipelinedResponses.Outgoing(request: request, slot: slot, index: i))
                    .whenFailure { slot.complete(i, .failure(ClientError($0))) }
            }
            channel.flush()
        }
        if channel.eventLoop.inEventLoop { writeAll() } else { channel.eventLoop.execute(writeAll) }
        return slot
    }

    // MARK: One method per request

    public func createTenant(_ id: String) async throws {
        try await call(.createTenant(Wire.CreateTenantRequest(tenantId: id))).createTenant()
    }

    nonisolated(nonsending)
    public func getPage(tenant: String, key: Wire.PageKey, lsn: UInt64? = nil, waitMs: UInt32 = 0) async throws -> Wire.GetPageResponse {
        try await call(.getPage(Wire.GetPageRequest(tenant: tenant, key: key, lsn: lsn, waitMs: waitMs))).getPage()
    }

    /// Many pages as of one LSN, sent together: one outcome per key, in order.
    nonisolated(nonsending)
    public func getPages(tenant: String, keys: [Wire.PageKey], lsn: UInt64? = nil, waitMs: UInt32 = 0) async
        -> [Result<Wire.GetPageResponse, ClientError>]
    {
        await callMany(keys.map { .getPage(Wire.GetPageRequest(tenant: tenant, key: $0, lsn: lsn, waitMs: waitMs)) })
            .map { r in r.flatMap { b in Result { () throws(ClientError) in try b.getPage() } } }
    }

    @discardableResult
    public func putRecords(tenant: String, _ records: [Wire.Record]) async throws -> UInt64 {
        try await call(.putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: records))).putRecords()
    }

    public func compact(tenant: String, forceImageLayers: Bool = false) async throws -> Wire.CompactResponse {
        try await call(.compact(Wire.CompactRequest(tenantId: tenant, forceImageLayers: forceImageLayers))).compact()
    }

    public func resetTenant(_ id: String, dropCache: Bool = false) async throws -> Wire.ResetTenantResponse {
        try await call(.resetTenant(Wire.ResetTenantRequest(tenantId: id, dropCache: dropCache))).resetTenant()
    }

    /// Serves a tenant from remote storage (the server needs `--remote-storage`).
    public func attachTenant(_ id: String, generation: UInt64) async throws -> Wire.AttachTenantResponse {
        try await call(.attachTenant(Wire.AttachTenantRequest(tenantId: id, generation: generation))).attachTenant()
    }

    /// Uploads everything of a tenant, then removes it from the server.
    public func detachTenant(_ id: String) async throws -> Wire.DetachTenantResponse {
        try await call(.detachTenant(Wire.DetachTenantRequest(tenantId: id))).detachTenant()
    }

    public func tenantStatus(_ id: String) async throws -> Wire.TenantStatusResponse {
        try await call(.tenantStatus(Wire.TenantStatusRequest(tenantId: id))).tenantStatus()
    }

    public func listTenants() async throws -> [String] {
        try await call(.listTenants(Wire.ListTenantsRequest())).listTenants()
    }

    public func serverStatus() async throws -> Wire.ServerStatusResponse {
        try await call(.serverStatus(Wire.ServerStatusRequest())).serverStatus()
    }

    public func configureFailpoints(_ failpoints: [Wire.Failpoint]) async throws {
        try await call(.configureFailpoints(Wire.ConfigureFailpointsRequest(failpoints: failpoints))).configureFailpoints()
    }
}

/// Writes requests and completes each one's slot when the response with
/// its id arrives, in whatever order the server answers. Anything else the
/// server sends ends the connection: an answer nobody waits for (a call
/// must never wait for ever for an answer that came under another id), or
/// bytes that are not a Response.
final class PipelinedResponses: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Outgoing
    typealias OutboundOut = ByteBuffer

    struct Outgoing: Sendable {
        var request: Wire.Request
        var slot: ResponseSlot
        var index: Int
    }

    private var pending: [UInt64: (slot: ResponseSlot, index: Int)] = [:]
    /// Why the connection ended: later calls fail with it.
    private var failure: ClientError?
    private let timeout: Duration?
    private var lastProgress = ContinuousClock.now
    private var watchdog: RepeatedTask?

    init(timeout: Duration?) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let timeout else { return }
        // One timer per connection, not one per call: the cost stays off the calls.
        let period = TimeAmount.nanoseconds(max(10_000_000, min(1_000_000_000, timeout.clampedNanoseconds / 4)))
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let (handler, context) = bound.value
            guard !handler.pending.isEmpty, ContinuousClock.now - handler.lastProgress > timeout else { return }
            handler.end(.timedOut(milliseconds: Int(timeout.clampedMilliseconds)), context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { watchdog?.cancel() }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let out = unwrapOutboundIn(data)
        if let failure {
            out.slot.complete(out.index, .failure(failure))
            promise?.fail(failure)
            return
        }
        if pending.isEmpty { lastProgress = .now }
        pending[out.request.requestId] = (out.slot, out.index)
        var frame = context.channel.allocator.buffer(capacity: 128)
        Wire.writeFrame(out.request, into: &frame)
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    /// Any byte from the server is progress (`BytesArrived`), as it is for
    /// `LayerGateConnection`: the timeout is for a server that says nothing.
    func bytesArrived() { lastProgress = .now }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let response = try? frame.withUnsafeReadableBytes({ try Wire.decodeResponse($0) }) else {
            end(.unexpectedResponse("a frame that is not a Response"), context: context)
            return
        }
        if let p = pending.removeValue(forKey: response.requestId) {
            p.slot.complete(p.index, response.outcome())
        } else if response.requestId == 0, case .error(let e)? = response.body {
            // The server refused the connection's bytes (or the connection) and is closing it.
            end(.server(code: e.code, message: e.message), context: context)
        } else {
            end(.unexpectedResponse("an answer to request \(response.requestId), which is not waiting"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        watchdog?.cancel()
        fail(.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        end(ClientError(error), context: context)
    }

    private func end(_ error: ClientError, context: ChannelHandlerContext) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: ClientError) {
        if failure == nil { failure = error }
        let all = pending
        pending = [:]
        for p in all.values { p.slot.complete(p.index, .failure(error)) }
    }
}

/// The answers to one call or one batch: each request's outcome is set exactly
/// once, whoever gets there first (its response, a failed write, the
/// connection closing), and the caller wakes once, when all are set.
final class ResponseSlot: Sendable {
    /// Nil for a slot failed at once: its loop may be gone, and a promise needs its loop.
    private let promise: EventLoopPromise<[Result<Wire.Response.Body, ClientError>]>?
    private let state: Mutex<(answers: [Result<Wire.Response.Body, ClientError>?], left: Int)>

    init(count: Int, promise: EventLoopPromise<[Result<Wire.Response.Body, ClientError>]>) {
        self.promise = promise
        state = Mutex((Array(repeating: nil, count: count), count))
    }

    /// Every one of `count` requests failed with `error` before it was sent.
    init(count: Int, failing error: ClientError) {
        promise = nil
        state = Mutex((Array(repeating: .failure(error), count: count), 0))
    }

    func complete(_ index: Int, _ outcome: Result<Wire.Response.Body, ClientError>) {
        let all: [Result<Wire.Response.Body, ClientError>]? = state.withLock { s in
            guard case nil = s.answers[index] else { return nil }
            s.answers[index] = outcome
            s.left -= 1
            return s.left == 0 ? s.answers.compactMap { $0 } : nil
        }
        if let all { promise?.succeed(all) }
    }

    /// Resumes on the caller's executor (its own continuation, not
    /// `EventLoopFuture.get`, which would resume on the global one). A
    /// continuation resumes its task on the generic executor before the task
    /// hops back to its actor: a woken thread of the global pool, unless the
    /// task prefers an executor. So a caller running on `loop` (an actor on
    /// the connection's executor, or a task preferring `loop`) waits with
    /// `loop` as its preference and is resumed where the answer came in. Any
    /// other caller must not: an actor of its own (a default one) would then
    /// go on running on the loop, and block it.
    nonisolated(nonsending)
    func answers(resumingOn loop: LoopTaskExecutor) async -> [Result<Wire.Response.Body, ClientError>] {
        if let done = state.withLock({ $0.left == 0 ? $0.answers.compactMap { $0 } : nil }) { return done }
        guard loop.isCurrent else { return await wait() }
        return await withTaskExecutorPreference(loop) { await wait() }
    }

    nonisolated(nonsending)
    private func wait() async -> [Result<Wire.Response.Body, ClientError>] {
        guard let promise else { return [] }  // failed at once: answered above
        return await withUnsafeContinuation { continuation in
            // The promise is only ever succeeded: each failure is an outcome inside it.
            promise.futureResult.whenComplete { continuation.resume(returning: (try? $0.get()) ?? []) }
        }
    }
}

extension ClientError {
    /// Any failure of the transport, as the client's own error.
    init(_ error: any Error) {
        switch error {
        case let e as ClientError: self = e
        case ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed, ChannelError.eof: self = .connectionClosed
        default: self = .transport(String(describing: error))
        }
    }
}

/// Tells `PipelinedResponses` that bytes came, before the frame decoder
/// holds them back until a frame is whole.
private final class BytesArrived: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let responses: PipelinedResponses

    init(_ responses: PipelinedResponses) { self.responses = responses }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        responses.bytesArrived()
        context.fireChannelRead(data)
    }
}
