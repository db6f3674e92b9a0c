import LayerGateWire
import NIOCore

/// One connection to layergated with blocking calls, for a thread that owns
/// it: the shape of a compute node's backend, and of `layergate-cbench`.
/// No event loop and no task stands between the caller and the socket, so a
/// round trip costs what the C client's does.
///
/// Not for sharing: one thread at a time (it is not `Sendable`). Use
/// `LayerGateClient` for async code that shares one connection.
///
/// A batch (`getPages`, `putMany`, `callMany`) is pipelined: its requests go
/// out while its answers come in, so a batch of any size never waits on a
/// socket buffer the other side is not draining. Puts are applied in the
/// order sent. After a failure of the connection itself (closed, timed out,
/// bytes that are not answers) every later call fails with the error that
/// ended it, as `LayerGateClient`'s do.
public final class LayerGateConnection {
    /// Sent with every request (a JWT; "" when the server checks none).
    public let token: String
    private let socket: UnixSocket
    private let timeoutMs: Int32
    private var nextId: UInt64 = 1
    /// Why the connection ended: later calls fail with it (an answer it broke on may have been the batch's last).
    private var failure: ClientError?
    private var frames: ResponseFrames
    private var output = ByteBufferAllocator().buffer(capacity: 16 << 10)

    /// Encoded requests kept ahead of the socket: enough to keep the server busy,
    /// bounded so that a batch of a million requests is not encoded all at once.
    private static let window = 256 << 10

    /// - Parameters:
    ///   - timeout: how long a call waits with no byte from the server before it
    ///     fails with `timedOut` and closes the connection; nil waits for ever.
    ///     Give more than the `waitMs` of any GetPage sent on it.
    ///   - maxFrameBytes: a larger answer closes the connection (a server sends
    ///     at most its own `--max-frame-mib`).
    public init(socketPath: String, token: String = "", timeout: Duration? = nil,
                maxFrameBytes: Int = defaultMaxFrameBytes) throws(ClientError) {
        self.token = token
        frames = ResponseFrames(maxFrameBytes: maxFrameBytes)
        // poll's limit is about 24 days; a longer timeout waits that long.
        timeoutMs = timeout.map { Int32(clamping: max(1, $0.clampedMilliseconds)) } ?? -1
        socket = try UnixSocket(path: socketPath, timeoutMs: timeoutMs)
    }

    public func close() { socket.close() }

    // MARK: Requests

    /// Sends one request and returns its answer's body; an `Error` answer throws `ClientError.server`.
    public func call(_ body: Wire.Request.Body, authToken: String? = nil) throws(ClientError) -> Wire.Response.Body {
        var result: Result<Wire.Response.Body, ClientError> = .failure(.connectionClosed)
        exchange(count: 1, authToken: authToken) { _ in body } answer: { _, r in result = r.flatMap { $0.outcome() } }
        return try result.get()
    }

    /// Sends every request pipelined and returns each one's outcome, in the order of `bodies`.
    public func callMany(_ bodies: [Wire.Request.Body], authToken: String? = nil) -> [Result<Wire.Response.Body, ClientError>] {
        var results = [Result<Wire.Response.Body, ClientError>](repeating: .failure(.connectionClosed), count: bodies.count)
        exchange(count: bodies.count, authToken: authToken) { bodies[$0] } answer: { results[$0] = $1.flatMap { $0.outcome() } }
        return results
    }

    /// The page as of `lsn` (nil: the latest).
    public func getPage(tenant: String, key: Wire.PageKey, lsn: UInt64? = nil, waitMs: UInt32 = 0)
        throws(ClientError) -> Wire.GetPageResponse
    {
        try call(.getPage(Wire.GetPageRequest(tenant: tenant, key: key, lsn: lsn, waitMs: waitMs))).getPage()
    }

    /// Many pages as of one LSN, pipelined: one outcome per key, in order.
    public func getPages(tenant: String, keys: [Wire.PageKey], lsn: UInt64? = nil, waitMs: UInt32 = 0)
        -> [Result<Wire.GetPageResponse, ClientError>]
    {
        var results = [Result<Wire.GetPageResponse, ClientError>](repeating: .failure(.connectionClosed), count: keys.count)
        exchange(count: keys.count, authToken: nil) { i in
            .getPage(Wire.GetPageRequest(tenant: tenant, key: keys[i], lsn: lsn, waitMs: waitMs))
        } answer: { i, r in
            results[i] = r.flatMap { $0.outcome() }.checked { b throws(ClientError) in try b.getPage() }
        }
        return results
    }

    /// Many pages as of one LSN, pipelined, into `pages`: memory the caller
    /// keeps from batch to batch, as the C client's `lg_get_pages` fills its
    /// caller's buffers. Page i lies at bytes i × 8192 ..< (i + 1) × 8192;
    /// `pages` is resized to hold `keys.count` pages (its capacity stays that
    /// of the largest batch it held), and a page whose read failed is left as
    /// it was. One outcome per key, in order: the LSN the
    /// page was read at. Nothing is allocated per page.
    public func getPages(tenant: String, keys: [Wire.PageKey], lsn: UInt64? = nil, waitMs: UInt32 = 0,
                         into pages: inout [UInt8]) -> [Result<UInt64, ClientError>]
    {
        Answer.fit(&pages, pages: keys.count)
        var results = [Result<UInt64, ClientError>](repeating: .failure(.connectionClosed), count: keys.count)
        exchange(count: keys.count, authToken: nil) { i in
            .getPage(Wire.GetPageRequest(tenant: tenant, key: keys[i], lsn: lsn, waitMs: waitMs))
        } answer: { i, r in
            results[i] = r.flatMap { $0.copyPage(into: &pages, at: i * Wire.pageBytes) }
        }
        return results
    }

    /// Stores records; returns the tenant's last record LSN after them.
    @discardableResult
    public func putRecords(tenant: String, _ records: [Wire.Record]) throws(ClientError) -> UInt64 {
        try call(.putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: records))).putRecords()
    }

    /// Many puts pipelined, applied in this order: one outcome per batch of records.
    /// A refused put does not stop the ones after it (each is checked on its own LSNs).
    public func putMany(tenant: String, _ batches: [[Wire.Record]]) -> [Result<UInt64, ClientError>] {
        var results = [Result<UInt64, ClientError>](repeating: .failure(.connectionClosed), count: batches.count)
        exchange(count: batches.count, authToken: nil) { i in
            .putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: batches[i]))
        } answer: { i, r in
            results[i] = r.flatMap { $0.outcome() }.checked { b throws(ClientError) in try b.putRecords() }
        }
        return results
    }

    public func createTenant(_ id: String) throws(ClientError) {
        try call(.createTenant(Wire.CreateTenantRequest(tenantId: id))).createTenant()
    }

    public func tenantStatus(_ id: String) throws(ClientError) -> Wire.TenantStatusResponse {
        try call(.tenantStatus(Wire.TenantStatusRequest(tenantId: id))).tenantStatus()
    }

    // MARK: The exchange

    /// Sends requests 0..<count (built by `request` as the window drains) and
    /// hands each answer to `answer` with its index. Every index gets exactly
    /// one call: when the connection fails, the unanswered get its error.
    private func exchange(count: Int, authToken: String?, request: (Int) -> Wire.Request.Body,
                          answer: (Int, Result<Answer, ClientError>) -> Void) {
        guard count > 0 else { return }
        var done = [Bool](repeating: false, count: count)
        var answered = 0
        guard socket.isOpen else {
            for i in 0..<count { answer(i, .failure(failure ?? .connectionClosed)) }
            return
        }
        let first = nextId
        nextId &+= UInt64(count)
        let token = authToken ?? self.token
        var queued = 0
        // The server stopped reading (it refused the connection, or is closing it):
        // nothing more is sent, but what it answered before is still read.
        var peerStoppedReading = false
        do throws(ClientError) {
            while answered < count {
                while !peerStoppedReading && queued < count && output.readableBytes < Self.window {
                    Wire.writeFrame(Wire.Request(requestId: first &+ UInt64(queued), authToken: token, body: request(queued)),
                                    into: &output)
                    queued += 1
                }
                if output.readableBytes > 0 {
                    let peerReads = try socket.write(from: &output)
                    if !peerReads {
                        peerStoppedReading = true
                        output.clear()
                    }
                }
                let outcome: UnixSocket.ReadOutcome
                if peerStoppedReading {
                    outcome = try frames.read(from: socket, waiting: false)
                } else if output.readableBytes == 0 {
                    // Nothing to send: wait for the answers in the read itself.
                    output.clear()
                    outcome = try frames.read(from: socket, waiting: true)
                    if case .wouldBlock = outcome { throw .timedOut(milliseconds: Int(timeoutMs)) }
                } else {
                    guard try socket.waitReadableOrWritable(timeoutMs: timeoutMs) else {
                        throw .timedOut(milliseconds: Int(timeoutMs))
                    }
                    outcome = try frames.read(from: socket, waiting: false)
                }
                try frames.take { response throws(ClientError) in
                    let i = response.requestId &- first
                    guard i < UInt64(count), !done[Int(i)] else { throw .notWaiting(response.requestId) }
                    done[Int(i)] = true
                    answered += 1
                    answer(Int(i), .success(response))
                }
                if case .endOfStream = outcome, answered < count { throw .connectionClosed }
                // What a server sent before it stopped reading is all in the socket by then: what
                // that does not answer never will be (a peer that shut only its reading side would
                // otherwise be waited for without end).
                if peerStoppedReading, case .wouldBlock = outcome, answered < count { throw .connectionClosed }
            }
        } catch {
            // The stream's state is unknown now: nothing more may be read from it or sent on it.
            failure = error
            socket.close()
            frames.clear()
            output.clear()
            for i in 0..<count where !done[i] { answer(i, .failure(error)) }
        }
    }
}
