import LayerGateWire
import Synchronization

/// One connection to layergated for async code. Calls may run concurrently:
/// they are pipelined on the connection and matched to responses by request
/// id. The connection lives on a `ClientLoop` (`ClientLoop.shared` unless
/// given another), one thread that serves every connection on it. A thread
/// that owns its connection gets more round trips per second from
/// `LayerGateConnection` (blocking calls, no loop between it and the socket).
///
/// A call whose task is cancelled fails with `ClientError.cancelled`; what it
/// sent may still be carried out by the server (its answer is dropped), and
/// the connection stays open.
public final class LayerGateClient: Sendable {
    private let socket: ClientSocket
    private let loop: ClientLoop
    private let nextId = Atomic<UInt64>(1)
    /// Sent with every request (a JWT; "" when the server checks none).
    public let token: String

    private init(socket: ClientSocket, loop: ClientLoop, token: String) {
        self.socket = socket
        self.loop = loop
        self.token = token
    }

    /// A client let go of without `close` closes its connection (a loop shut
    /// down closed it already, and is not started again for it).
    deinit {
        let socket = socket
        loop.executeIfRunning { socket.end(.connectionClosed) }
    }

    /// - Parameter token: the JWT this client sends with every request, when
    ///   the server checks tokens (`layergate token` makes one).
    /// - Parameter timeout: when requests wait and no byte has come from the
    ///   server for this long, every waiting call fails with `timedOut` and the
    ///   connection closes; also the limit for connecting to a server whose
    ///   listen backlog is full. Nil waits for ever.
    ///   Give more than the `waitMs` of any GetPage sent on it.
    /// - Parameter maxFrameBytes: a larger answer closes the connection (a
    ///   server sends at most its own `--max-frame-mib`).
    /// - Parameter loop: the thread that serves the connection; connections
    ///   share `ClientLoop.shared` unless given their own.
    public static func connect(socketPath: String, token: String = "", timeout: Duration? = nil,
                               maxFrameBytes: Int = defaultMaxFrameBytes,
                               loop: ClientLoop = .shared) async throws(ClientError) -> LayerGateClient {
        try loop.start()
        let timeoutMs = timeout.map { Int32(clamping: max(1, $0.clampedMilliseconds)) } ?? -1
        let unix = try await UnixSocket.connect(path: socketPath, timeoutMs: timeoutMs)
        let socket = ClientSocket(unix, loop: loop, timeout: timeout, maxFrameBytes: maxFrameBytes)
        // Not registered: nothing on the loop knows the socket, and letting it go closes its descriptor.
        if let refused = await loop.perform({ loop.register(socket) }) { throw refused }
        return LayerGateClient(socket: socket, loop: loop, token: token)
    }

    /// Closes the connection; calls still waiting fail with `connectionClosed`.
    public func close() async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            loop.executeIfRunning { [socket] in
                socket.end(.connectionClosed)
                done.resume()
            } dropped: {
                done.resume()  // its loop was shut down, which closed it
            }
        }
    }

    /// The connection's loop as an executor. An actor that drives this
    /// connection can run on it (`nonisolated var unownedExecutor:
    /// UnownedSerialExecutor { client.executor.asUnownedSerialExecutor() }`):
    /// `call`, `callMany`, `getPage` and `getPages` then send and resume on the
    /// loop's own thread, without waking another thread for each call.
    public var executor: any SerialExecutor { loop }

    /// The connection's loop as a task executor: the other way to drive the
    /// connection from its own thread, for code that is not in an actor
    /// (`Task(executorPreference: client.taskExecutor) { … }`, or
    /// `withTaskExecutorPreference`). A call from a task with neither wakes a
    /// thread of Swift's global pool when its answer comes.
    public var taskExecutor: any TaskExecutor { loop }

    /// Sends one request and returns the body of its response; an `Error`
    /// response throws `ClientError.server`. `authToken` overrides the client's token.
    nonisolated(nonsending)
    public func call(_ body: Wire.Request.Body, authToken: String? = nil) async throws(ClientError) -> Wire.Response.Body {
        try await send(body, authToken: authToken).response()
    }

    /// A request sent and not answered yet (`send`).
    public struct Pending: Sendable {
        fileprivate let slot: ResponseSlot<Outcomes>
        fileprivate let loop: ClientLoop

        /// The body of its response; an `Error` response throws `ClientError.server`.
        nonisolated(nonsending)
        public func response() async throws(ClientError) -> Wire.Response.Body {
            guard let answer = await slot.answers(resumingOn: loop).all.first else { throw .connectionClosed }
            return try answer.get()
        }
    }

    /// Sends one request without waiting for its answer. Requests sent one
    /// after another from one task leave in that order, and the server
    /// applies puts in the order they arrive on a connection: a caller can
    /// keep many puts in flight and await their answers later.
    public func send(_ body: Wire.Request.Body, authToken: String? = nil) -> Pending {
        Pending(slot: submit([body], authToken: authToken, into: Outcomes(count: 1)), loop: loop)
    }

    /// Sends every request pipelined and returns each one's outcome, in the order of
    /// `bodies`. The batch costs at most one hop to the loop and one wake-up of the
    /// caller, whatever its size.
    nonisolated(nonsending)
    public func callMany(_ bodies: [Wire.Request.Body], authToken: String? = nil) async -> [Result<Wire.Response.Body, ClientError>] {
        guard !bodies.isEmpty else { return [] }
        return await submit(bodies, authToken: authToken, into: Outcomes(count: bodies.count)).answers(resumingOn: loop).all
    }

    private func submit<Gathered: GatheredAnswers>(_ bodies: [Wire.Request.Body], authToken: String?,
                                  into gathered: consuming Gathered) -> ResponseSlot<Gathered> {
        // Ended: its loop may be shut down too, and nothing would answer. Fails with what ended it.
        if let failure = socket.failure { return ResponseSlot(count: bodies.count, into: gathered, failing: failure) }
        // A cancelled task sends nothing.
        if Task.isCancelled { return ResponseSlot(count: bodies.count, into: gathered, failing: .cancelled) }
        let authToken = authToken ?? token
        let first = nextId.add(UInt64(bodies.count), ordering: .relaxed).oldValue
        let slot = ResponseSlot(count: bodies.count, into: consume gathered, sentOn: socket, loop: loop, first: first)
        if loop.isCurrent {
            socket.send(bodies, first: first, authToken: authToken, slot: Gathered.sink(slot))
        } else {
            let sink = Gathered.sink(slot)
            loop.executeIfRunning { [socket] in
                socket.send(bodies, first: first, authToken: authToken, slot: sink)
            } dropped: { [socket] in
                // Shut down since the check above: the loop ended the connection.
                sink.fail(bodies.count, socket.failure ?? .connectionClosed)
            }
        }
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
            .map { $0.checked { b throws(ClientError) in try b.getPage() } }
    }

    /// Many pages as of one LSN, sent together, into `pages`: memory the
    /// caller keeps from batch to batch, as the C client's `lg_get_pages`
    /// fills its caller's buffers. Page i lies at bytes i × 8192 ..< (i + 1) ×
    /// 8192; `pages` is resized to hold `keys.count` pages, and a page whose
    /// read failed is left as it was (its capacity stays that of the largest
    /// batch it held). One outcome per key, in order: the LSN the page was
    /// read at. Nothing is allocated per page, where `getPages`
    /// allocates an array for each (and glibc may hand a freed batch's memory
    /// back to the kernel, to fault it in again for the next).
    ///
    /// The connection's loop writes into `pages` while the call waits: pass
    /// an array that nothing else shares, or its first write copies it.
    nonisolated(nonsending)
    public func getPages(tenant: String, keys: [Wire.PageKey], lsn: UInt64? = nil, waitMs: UInt32 = 0,
                         into pages: inout [UInt8]) async -> [Result<UInt64, ClientError>]
    {
        Answer.fit(&pages, pages: keys.count)
        guard !keys.isEmpty else { return [] }
        let lent = PageReads(count: keys.count, into: pages)
        pages = []
        let bodies = keys.map { Wire.Request.Body.getPage(Wire.GetPageRequest(tenant: tenant, key: $0, lsn: lsn, waitMs: waitMs)) }
        // `consume`: left to live until the scope ends (as unoptimized builds do), `lent` would
        // share the array with the slot, and the loop's first write would copy all of it.
        let done = await submit(bodies, authToken: nil, into: consume lent).answers(resumingOn: loop)
        pages = done.pages
        return done.outcomes
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
