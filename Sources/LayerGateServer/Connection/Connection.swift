import LayerGateAuth
import LayerGateStorage
import LayerGateWire
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One client connection: bytes in, frames out of them, each frame decoded
/// as a `Request`, authorized, run, and answered with its request id, in any
/// order (puts in the order they were sent).
///
/// What a peer can hold is bounded here (`ServerLimits`):
/// - frames are taken from the read buffer only while the connection has
///   fewer than `maxInFlightPerConnection` requests running and its unread
///   responses stay under the write buffer's high water mark; otherwise it is
///   not read, so a client that never reads fills its own socket, not us;
/// - a frame larger than `smallFrameBytes` first reserves its size from the
///   server-wide `InflightBudget`, and is decoded off the event loop;
/// - a frame must arrive in time (`frameTimeout`, plus a second per MiB), an
///   idle connection is closed after `idleTimeout`, and a large frame waits
///   for room in the budget for `frameTimeout` at most;
/// - when the connection closes, everything it was running is cancelled
///   (a GetPage waiting for an LSN is freed at once).
///
/// It runs on its transport's loop (the epoll loop's `SocketConnection`, or
/// SwiftNIO's `ConnectionHandler`), called by it for bytes and events.
final class Connection<Transport: ConnectionTransport> {
    private let dispatcher: Dispatcher
    private let peer: PeerIdentity
    private let limits: ServerLimits
    private let maxFrameBytes: Int
    private let budgets: InflightBudgets
    private let tracker: InFlightTracker
    private let logger: Logger

    // The state a cached GetPage touches is `@exclusivity(unchecked)`: it is
    // used only on the loop's thread and never under an access to itself,
    // and the runtime's checks of class properties were 3-4 % of the
    // server's CPU per cached GetPage (a check, a thread-local access set).
    @exclusivity(unchecked) private var buffer: ByteBuffer?
    /// `buffer` is the transport's read buffer, taken as it was received: its
    /// storage is the one the transport reads its next bytes into.
    @exclusivity(unchecked) private var bufferIsTransports = false
    private var readPending = false
    @exclusivity(unchecked) private var closing = false
    @exclusivity(unchecked) private var inFlight = 0
    /// What the frame being received holds of a budget.
    @exclusivity(unchecked) private var reserved: Reservation?
    /// Not read until a budget has room, or the frame's token is verified.
    private var waitingForBudget: Bool { waitCountedTo != nil }
    /// This connection's place in a budget's queue, while it waits there.
    private var budgetTicket: (pool: InflightBudget, ticket: UInt64)?
    /// The token of the large frame waiting to be read, once verified.
    private var verifiedForFrame: String?
    /// When the first byte of the frame being received arrived.
    @exclusivity(unchecked) private var frameStarted: NIODeadline?
    /// How long the frame being received has waited for room in a budget,
    /// counted up to `waitCountedTo`, which is set exactly while it waits.
    private var waitedForBudget = TimeAmount.zero
    @exclusivity(unchecked) private var waitCountedTo: NIODeadline?
    /// Since when the frame that holds room in a budget has been held back (nil: it is not).
    private var heldBackWithBudgetSince: NIODeadline?
    @exclusivity(unchecked) private var lastActivity = NIODeadline.now()
    /// Read once per `process`: what tokens' expiry is checked against, and
    /// the start of the latency of every request answered in that pass.
    @exclusivity(unchecked) private var now = NIODeadline.now()
    private var lastCheck = NIODeadline.now()
    private var tasks: [UInt64: Task<Void, Never>] = [:]
    private var nextTask: UInt64 = 0
    /// The last put's place in this connection's order (`PutTurn`): the next put waits for it, so puts apply in order.
    private var lastPutTurn: PutTurn?
    private var tokens = TokenCache()
    /// The token of the last request, reused by the next decode when equal.
    private var lastToken: String? {
        didSet { if oldValue.map({ !TokenCache.sameBytes($0, lastToken ?? "") }) ?? true { lastTokenRight = nil } }
    }
    /// What `lastToken` lets the connection read, once its verification is
    /// known: a GetPage read in place carries exactly that token, so a cache
    /// hit checks `right` and `until` and nothing else (no lookup; read field
    /// by field, so the grant is not copied, which cost a retain and a release
    /// per request). The grant is kept to word a refusal: the token cache may
    /// have let the token go since (it keeps eight), and a refusal must not depend on it.
    @exclusivity(unchecked) private var lastTokenRight: KnownRight?
    private struct KnownRight {
        var right: Dispatcher.ReadRight
        var until: NIODeadline?
        var grant: Result<Grant, TokenError>
    }
    /// Set when the connection is closed, for its disk reads on read threads:
    /// a read still queued then does no I/O and holds no page buffer, so a peer
    /// that pipelines reads and hangs up, again and again, costs no disk time
    /// and no memory for answers nobody takes.
    private let gone = Gone()
    /// Small frames decode into this, on the event loop (large ones, off it, use malloc).
    private let arena = DecodeArena(capacity: 4 << 10)
    @exclusivity(unchecked) private var unflushed = false
    /// GetPages answered on the loop in this pass, counted at its end (`countInlineAnswers`).
    @exclusivity(unchecked) private var answeredInPass = 0
    /// The peer sent all it will (it shut its side down): what it sent is answered, then the connection closes.
    @exclusivity(unchecked) private var inputEnded = false
    /// Nil once the transport is gone (tasks may still finish after that).
    @exclusivity(unchecked) private var transport: Transport?
    private var loop: any LoopExecutor = NoLoop()

    init(_ settings: ConnectionSettings, peer: PeerIdentity) {
        dispatcher = settings.dispatcher
        self.peer = peer
        limits = settings.limits
        maxFrameBytes = settings.maxFrameBytes
        budgets = settings.budgets
        tracker = settings.tracker
        logger = settings.logger
    }

    // MARK: what the transport tells

    /// `loop` runs closures on the transport's thread: answers from tasks and read threads hop back through it.
    func attach(_ transport: Transport, loop: any LoopExecutor) {
        self.transport = transport
        self.loop = loop
    }

    /// The transport let go of this connection: nothing more is written to it.
    func detach() { transport = nil }

    func active() {
        let count = dispatcher.connectionCount.add(1, ordering: .relaxed).newValue
        let serverUser = dispatcher.isServerUser(peer)
        if count <= (serverUser ? limits.maxConnections : limits.connectionsForOtherPeers) { return }
        let message = serverUser
            ? "the server holds its maximum of \(limits.maxConnections) connections; retry later"
            : "the server holds \(limits.connectionsForOtherPeers) connections, its maximum for peers other than its own uid and root (\(limits.keptForServerUser) more are kept for those); retry later"
        fail(code: .resourceExhausted, message: message, isRequest: false)
    }

    func inactive() {
        dispatcher.connectionCount.subtract(1, ordering: .relaxed)
        closing = true
        for task in tasks.values { task.cancel() }  // waits end now, not at their timeout
        gone.set()  // disk reads still queued for it are skipped
        leaveBudgetQueue()
        reserved?.release()
        reserved = nil
        letGoOfBuffer()
    }

    func received(_ bytes: ByteBuffer) {
        guard !closing else { return }
        var bytes = bytes
        if buffer == nil {
            buffer = bytes
            bufferIsTransports = true
        } else {
            buffer?.writeBuffer(&bytes)
        }
        arrived()
    }

    /// Bytes came in, appended to `buffer` already: the peer is active, and frames may be whole.
    private func arrived() {
        lastActivity = .now()
        process()
    }

    /// Reads straight into the buffer this connection keeps between reads:
    /// the rest of a large frame, in the buffer `keepRest` gave the frame's
    /// whole size, or after the start of a frame that `keepRest` moved into a
    /// spare of the transport's. No copy through the loop's read buffer, and
    /// no growing: only what fits is read. `read` fills the space it is given
    /// and returns the bytes read (0: none). Nil, without calling `read`, when
    /// the connection keeps no buffer of its own with room.
    func receiveInPlace(_ read: (UnsafeMutableRawBufferPointer) -> Int) -> Int? {
        guard !closing, !bufferIsTransports, let room = buffer?.writableBytes, room > 0 else { return nil }
        let n = buffer?.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { read($0) } ?? 0
        guard n > 0 else { return 0 }
        arrived()
        return n
    }

    func readComplete() { transport?.flush() }

    /// The peer shut down its sending side (`shutdown(SHUT_WR)`) and waits
    /// for its answers: every whole frame it sent is answered, a partial one
    /// can never complete and is dropped, then the connection closes.
    func endOfInput() {
        guard !closing, !inputEnded else { return }
        inputEnded = true
        process()
    }

    /// The socket is read only when nothing holds the connection back.
    func readRequested() {
        readPending = true
        requestReadIfAllowed()
    }

    /// The peer read its answers: that is activity too (it may have pipelined everything at first).
    func writabilityChanged() {
        if transport?.isWritable == true { lastActivity = .now() }
        process()
    }

    // MARK: frames

    /// A whole frame waits in the buffer (it is taken before more is read).
    private var hasWholeFrame: Bool {
        guard let length = buffer?.peekInteger(endianness: .big, as: UInt32.self), let readable = buffer?.readableBytes else { return false }
        return readable >= 4 + Int(length)
    }

    private var canTakeFrame: Bool {
        !closing && inFlight < limits.maxInFlightPerConnection && (transport?.isWritable ?? false)
    }

    /// Takes every whole frame it may from the buffer, then asks for more
    /// bytes only if nothing holds the connection back.
    private func process() {
        now = .now()
        defer { countInlineAnswers() }  // also on the paths that end the pass early
        // `buffer` is peeked at through `?.`, not bound with `let`: a copy of it costs a retain and a release per frame.
        while canTakeFrame, let length = buffer?.peekInteger(endianness: .big, as: UInt32.self) {
            let size = Int(length)
            guard size <= maxFrameBytes else {
                fail(code: .frameTooLarge,
                     message: "\(FrameError.frameTooLarge(length: size, max: maxFrameBytes))")
                return
            }
            guard size > 0 else {
                // Its answer could only go under request id 0, which means "the connection": end it.
                fail(code: .invalidArgument, message: "an empty frame is not a Request")
                return
            }
            if size > limits.smallFrameBytes && reserved == nil {
                // Only a PutRecords is this large; without tokens only the server's uid may send one.
                guard dispatcher.verifier != nil || dispatcher.isServerUser(peer) else {
                    fail(code: .permissionDenied,
                         message: "a request of \(size) bytes is a PutRecords, which needs the server's uid or root")
                    return
                }
                // Waiting already, for room or for this frame's token: a wake-up comes (`budgetGranted`, `verificationEnded`).
                if waitingForBudget { break }
                if !mayWrite, let verifier = dispatcher.verifier {
                    // Which pool depends on the token this frame carries: verified first, off the loop.
                    let peek = buffer.flatMap { frameToken(in: $0, size: size) }
                    if case .needMore? = peek { break }  // read on: the token is in the frame's first bytes
                    if case .token(let token)? = peek, tokens.lookup(token, at: now) == nil,
                       !(verifiedForFrame.map { TokenCache.sameBytes($0, token) } ?? false) {
                        verify(token, with: verifier)
                        break  // the answers appended so far still go out below
                    }
                }
                let pool = mayWrite ? budgets.writers : budgets.others
                let bound = LoopBound(self, loop: loop)
                if case .queued(let ticket) = pool.reserve(size, granted: { bound.hop { $0.budgetGranted(size, from: pool) } }) {
                    // Not read until the budget has room for this frame. The answers appended
                    // so far still go out below: returning before the flush once left them unsent.
                    budgetTicket = (pool, ticket)
                    startWaiting()
                    break
                }
                holdBudget(size, from: pool)
            }
            guard let readable = buffer?.readableBytes, readable >= 4 + size else { break }
            buffer?.moveReaderIndex(forwardBy: 4)
            guard let frame = buffer?.readSlice(length: size) else { break }
            frameStarted = nil
            let charge = reserved
            reserved = nil
            take(frame, charge: charge)
        }
        // A partial frame (or header) is on the clock from its first byte.
        if frameStarted == nil, let b = buffer, b.readableBytes > 0, !hasWholeFrame { frameStarted = .now() }
        keepRest()
        if inputEnded, !closing, !hasWholeFrame, inFlight == 0, !waitingForBudget {
            // Everything the peer sent is answered: it only waits to read the answers.
            // The unfinished frame, if any, gives its budget back now, not when the socket closes.
            closing = true
            letGoOfBuffer()
            reserved?.release()
            reserved = nil
            transport?.closeAfterFlush()
            return
        }
        countInlineAnswers()  // before the answers can reach the peer
        if unflushed {
            unflushed = false
            transport?.flush()
        }
        requestReadIfAllowed()
    }

    /// What a pass leaves in the buffer: nothing (let go), or the start of the
    /// next frame. A large frame whose budget is reserved gets a buffer of its
    /// whole size now, so the rest of it is appended in place. Why: a 512 KiB
    /// put comes in 64 KiB reads; the buffer's doublings, and the copy of a
    /// buffer still shared with the frame just taken, cost 6 % of the
    /// server's CPU during ingest. The reservation bounds what this allocates.
    /// Any other start of a frame left in the transport's read buffer moves to
    /// a spare of the transport's, so the transport reads its next bytes into
    /// storage no one else holds: kept there, an eighth of the cached GetPages
    /// at 8 connections × 16 in flight each allocated a new read buffer.
    private func keepRest() {
        // Peeked at through `?.`: a bound copy would make the buffer shared, and discarding then copies it.
        guard let rest = buffer?.readableBytes, rest > 0 else {
            letGoOfBuffer()
            return
        }
        if let reserved, let reader = buffer?.readerIndex, let capacity = buffer?.capacity,
           reader > 0 || capacity < 4 + reserved.bytes {
            var whole = ByteBufferAllocator().buffer(capacity: max(4 + reserved.bytes, rest))
            if let old = buffer { whole.writeImmutableBuffer(old) }
            buffer = whole
            bufferIsTransports = false
        } else if bufferIsTransports, var own = transport?.spareReadBuffer(), own.writableBytes >= rest, let old = buffer {
            own.writeImmutableBuffer(old)
            buffer = own
            bufferIsTransports = false
        } else {
            buffer?.discardReadBytes()
        }
    }

    /// Nothing left to keep: a buffer of the connection's own goes back to the transport's spares.
    private func letGoOfBuffer() {
        if !bufferIsTransports, let kept = buffer {
            buffer = nil  // the spare is then the one reference
            transport?.recycleReadBuffer(kept)
        }
        buffer = nil
        bufferIsTransports = false
    }

    /// The pass's cache hits go into the metrics together: one clock reading
    /// for all of them, where there was one per GetPage.
    private func countInlineAnswers() {
        guard answeredInPass > 0 else { return }
        dispatcher.countPagesAnswered(answeredInPass, since: now)
        answeredInPass = 0
    }

    private func startWaiting() { waitCountedTo = .now() }

    private func stopWaiting() {
        countWait(to: .now())
        waitCountedTo = nil
    }

    private func holdBudget(_ bytes: Int, from pool: InflightBudget) {
        reserved = Reservation(bytes: bytes, pool: pool)
        verifiedForFrame = nil
        waitedForBudget = .zero
    }

    /// The budget reserved the waiting frame's bytes for this connection.
    private func budgetGranted(_ bytes: Int, from pool: InflightBudget) {
        guard transport != nil, !closing, budgetTicket != nil else {
            pool.release(bytes)  // refused or closed meanwhile: the bytes go to the next in the queue
            return
        }
        budgetTicket = nil
        stopWaiting()
        holdBudget(bytes, from: pool)
        process()
    }

    /// Leaves the budget's queue; a grant already on its way is given back when it comes.
    private func leaveBudgetQueue() {
        guard let (pool, ticket) = budgetTicket else { return }
        budgetTicket = nil
        pool.cancel(ticket)
    }

    private func verificationEnded() {
        guard waitingForBudget, transport != nil else { return }
        stopWaiting()
        process()
    }

    /// Only the time spent waiting counts: charging a check's whole interval
    /// refused a put that had waited 0.1 s of a 1 s limit.
    private func countWait(to t: NIODeadline) {
        guard let from = waitCountedTo else { return }
        waitedForBudget = waitedForBudget + (t - from)
        waitCountedTo = t
    }

    /// The token at the start of a large frame's body, or nil once enough has
    /// arrived to say there is none (a frame's first 16 KiB, at most).
    private func frameToken(in b: ByteBuffer, size: Int) -> MessageShape.TokenPeek? {
        let available = min(b.readableBytes - 4, size)
        let peek = b.withUnsafeReadableBytes { MessageShape.peekAuthToken(UnsafeRawBufferPointer(rebasing: $0[4..<4 + available])) }
        if case .needMore = peek, available >= min(size, 16 << 10) { return nil }
        return peek
    }

    /// Verifies a token in a task; the connection is not read meanwhile.
    private func verify(_ token: String, with verifier: TokenVerifier) {
        startWaiting()
        let bound = LoopBound(self, loop: loop)
        Task {
            let grant = await verifier.verify(token)
            bound.hop { handler in
                handler.tokens.remember(token, grant)
                // A verdict the cache does not keep (not valid yet) still settles this frame's
                // pool; verified again and again, it kept a core busy until its `nbf`.
                handler.verifiedForFrame = token
                handler.verificationEnded()
            }
        }
    }

    /// Whether this connection's peer may write pages: the server's uid
    /// without tokens, or a token it showed that verified with a writing scope.
    private var mayWrite: Bool {
        guard dispatcher.verifier != nil else { return dispatcher.isServerUser(peer) }
        return tokens.mayWrite(at: now)
    }

    private func requestReadIfAllowed() {
        guard readPending, !inputEnded, canTakeFrame, !waitingForBudget, !hasWholeFrame else { return }
        readPending = false
        transport?.read()
    }

    /// One frame: decoded and answered here when small and cheap (a cached
    /// page), else run in a task.
    private func take(_ frame: ByteBuffer, charge: Reservation?) {
        let limits = self.limits
        if let charge {
            // Large: decoded and checked off the event loop.
            run(charge: charge, isPut: frame.isPutRecordsRequest) { _, _ in
                switch Self.decode(frame, limits: limits) {
                case .failure(let closeWith): return .close(closeWith)
                case .success(let request): return .respond(request)
                }
            }
            return
        }
        // A plain GetPage is read in place, and a cache hit answered from it.
        if let g = frame.withUnsafeReadableBytes({
            Wire.readGetPageInPlace($0, knownToken: lastToken, maxMessages: limits.maxMessagesPerRequest)
        }) {
            takeInPlace(g)
            return
        }
        let request: Wire.Request
        switch Self.decode(frame, limits: limits, knownToken: lastToken, arena: arena) {
        case .failure(let d):
            if d.requestId == 0 {
                fail(code: d.code, message: d.message)
            } else {
                dispatcher.metrics.finished(.invalid, error: d.code, since: now)
                write(Wire.Response(requestId: d.requestId, body: .error(Wire.Error(code: d.code, message: d.message))))
            }
            return
        case .success(let r):
            request = r
            if !r.authToken.isEmpty { lastToken = r.authToken }
        }
        // Served from memory and cached blocks when it can be: no task, no hand-off.
        // A token not seen on this connection yet is verified in the task.
        let known: Bool
        var grant: Result<Grant, TokenError>? = nil
        if dispatcher.verifier == nil {
            known = true
        } else if let cached = tokens.lookup(request.authToken, at: now) {
            (known, grant) = (true, cached)
        } else {
            known = false
        }
        if known, case .getPage? = request.body, answeredInline(fallback: request, {
            dispatcher.handleInline(request, grant: grant, peer: peer, since: now, sharing: sharesPages, into: &$0)
        }) {
            return
        }
        run(charge: nil, isPut: request.isPut) { _, _ in .respond(request) }
    }

    /// A GetPage read in place: it carries this connection's last token (or
    /// none, when none was seen). Answered here when the token's verification
    /// is known and the page cached; else run in a task like any request.
    private func takeInPlace(_ g: Wire.InPlaceGetPage) {
        var right = Dispatcher.ReadRight.everyTenant  // without tokens
        var known = true
        if dispatcher.verifier != nil {
            if lastTokenRight == nil, let token = lastToken, let entry = tokens.entry(token) {
                lastTokenRight = KnownRight(right: Dispatcher.readRight(entry.result), until: entry.until, grant: entry.result)
            }
            if let r = lastTokenRight?.right {
                right = lastTokenRight?.until.map { now < $0 } ?? true ? r : .refused
            } else {
                known = false
            }
        }
        if known, answeredInline(fallback: g.request(authToken: lastToken ?? ""), {
            dispatcher.handleInline(g, right: right, grant: self.lastTokenRight.map { TokenCache.verdict($0.grant, until: $0.until, at: self.now) },
                                    peer: peer, since: self.now, sharing: sharesPages, into: &$0)
        }) {
            return
        }
        let request = g.request(authToken: lastToken ?? "")
        run(charge: nil, isPut: false) { _, _ in .respond(request) }
    }

    /// Writes what `handle` answers on the event loop (a page's frame, built
    /// in place in what the socket is written from, or an error), or hands a
    /// read that needs the disk to a read thread; false when it needs a task.
    /// `fallback` is the request, for a disk read that finds it must wait for its LSN.
    /// Whether answers built here may leave an in-memory page out for the transport to send from where it is.
    private var sharesPages: Bool { transport?.sendsSharedPages ?? false }

    private func appendShared(_ page: Dispatcher.SharedPage) {
        transport?.insertSharedPage(page.image, beforeLast: page.bytesAfterPage)
        unflushed = true
    }

    private func answeredInline(fallback: @autoclosure () -> Wire.Request,
                                _ handle: (inout ByteBuffer) -> Dispatcher.InlineAnswer?) -> Bool {
        guard transport != nil else { return true }  // gone: nobody to answer
        switch transport?.writeFrame(handle) ?? nil {  // not bound with `let`: that costs a retain and a release
        case .frame?:
            unflushed = true
            answeredInPass += 1
            return true
        case .frameSharing(let page)?:
            appendShared(page)
            answeredInPass += 1
            return true
        case .response(let response)?:
            write(response)
            return true
        case .disk(let read)?:
            readFromDisk(read, fallback: fallback())
            return true
        case nil:
            return false
        }
    }

    private func wrote(_ answer: Dispatcher.InlineAnswer?, _ out: ByteBuffer) -> Bool {
        switch answer {
        case .frame?:
            transport?.write(out)
            unflushed = true
            return true
        case .response(let response)?:
            write(response)
            return true
        case .frameSharing?:
            preconditionFailure("a read thread's answer shares a page: readFromDisk builds its frames whole")
        case .disk?, nil:
            return false
        }
    }

    /// A GetPage that needs the disk: the loop reads the blocks it lacks itself
    /// (`KernelReads`) and answers it again once they are cached, a few times
    /// at most (an index block, then the page's blocks, then an older layer's).
    /// Else it goes straight to a read thread, whose answer comes back to the
    /// event loop: two hand-offs, where a task would take four (loop, task,
    /// read thread, task, loop).
    private func readFromDisk(_ read: Dispatcher.DiskRead, fallback: Wire.Request, kernelTrips: Int = 0) {
        inFlight += 1
        tracker.started()
        // A kernel read's `done` runs on a later pass of the loop, never inside `read`.
        if kernelTrips < Self.maxKernelTrips, let miss = read.miss, let reads = transport?.kernelReads,
           reads.read(miss, { [self] bytes in kernelReadDone(read, miss, bytes, fallback: fallback, trips: kernelTrips + 1) }) {
            return
        }
        let (dispatcher, gone) = (self.dispatcher, self.gone)
        let bound = LoopBound(self, loop: loop)
        ReadThreads.shared.submit {
            let allocator = ByteBufferAllocator()
            var out = allocator.buffer(capacity: 0)
            var answer: Dispatcher.InlineAnswer?
            if !gone.isSet {
                out.reserveCapacity(pageFrameCapacity)
                answer = dispatcher.readFromDisk(read, into: &out)
            }
            let (a, done) = (answer, out)
            bound.hop { $0.readFinished(a, done, fallback: fallback) }
        }
    }

    /// Kernel reads one GetPage may take before the rest is left to a read thread.
    private static var maxKernelTrips: Int { 8 }

    private func kernelReadDone(_ read: Dispatcher.DiskRead, _ miss: BlockMiss, _ bytes: UnsafeRawBufferPointer?,
                                fallback: Wire.Request, trips: Int) {
        inFlight -= 1
        tracker.finished()
        // Cached even when its requester is gone: another reader may want the blocks.
        let installed = bytes.map { miss.install($0) } ?? false
        guard transport != nil, !closing else { return }
        guard installed else {
            // Failed, short, or not what the file should hold: the ordinary read says why.
            readFromDisk(read, fallback: fallback, kernelTrips: Self.maxKernelTrips)
            process()
            return
        }
        switch transport?.writeFrame({ dispatcher.readWithoutWaiting(read, sharing: sharesPages, into: &$0) }) ?? nil {
        case .frame?:
            unflushed = true
        case .frameSharing(let page)?:
            appendShared(page)
        case .response(let response)?:
            write(response)
        case .disk(let next)?:
            readFromDisk(next, fallback: fallback, kernelTrips: trips)
        case nil:
            run(charge: nil, isPut: false) { _, _ in .respond(fallback) }
        }
        process()
    }

    private func readFinished(_ answer: Dispatcher.InlineAnswer?, _ out: ByteBuffer, fallback: Wire.Request) {
        inFlight -= 1
        tracker.finished()
        guard transport != nil, !closing else { return }
        if !wrote(answer, out) {
            // Its LSN is not ingested yet: a task waits for it.
            run(charge: nil, isPut: false) { _, _ in .respond(fallback) }
        }
        process()
    }

    private enum Step: Sendable {
        case respond(Wire.Request)
        case close(Decoded)
    }

    /// Runs `prepare` and then the request in a task; its answer is written on
    /// the event loop. A put is admitted only after the put before it was
    /// admitted (not made durable: pipelined puts share a group commit).
    private func run(charge: Reservation?, isPut: Bool, _ prepare: @escaping @Sendable (Dispatcher, PeerIdentity) -> Step) {
        guard transport != nil else { return }
        inFlight += 1
        tracker.started()
        let key = nextTask
        nextTask += 1
        let (dispatcher, peer, verifier) = (self.dispatcher, self.peer, dispatcher.verifier)
        let cached = tokens
        let previousTurn = isPut ? lastPutTurn : nil
        let turn = isPut ? PutTurn() : nil
        if isPut { lastPutTurn = turn }
        let bound = LoopBound(self, loop: loop)
        let task = Task {
            var outcome: TaskOutcome
            switch prepare(dispatcher, peer) {
            case .close(let d):
                outcome = .close(d)
            case .respond(let request):
                var grant: Result<Grant, TokenError>? = nil
                if let verifier {
                    if let known = cached.lookup(request.authToken, at: .now()) { grant = known } else { grant = await verifier.verify(request.authToken) }
                }
                let response = await dispatcher.handle(request, grant: grant, peer: peer, order: turn.map { (previousTurn, $0) })
                outcome = .respond(response, token: request.authToken, grant: grant)
            }
            // Refused, undecodable or stored: the next put goes once every put before this one was admitted.
            if let turn {
                await previousTurn?.reached()
                turn.pass()
            }
            let done = outcome
            bound.hop { $0.finished(key: key, charge: charge, outcome: done) }
        }
        tasks[key] = task
    }

    private enum TaskOutcome: Sendable {
        case respond(Wire.Response, token: String, grant: Result<Grant, TokenError>?)
        case close(Decoded)
    }

    private func finished(key: UInt64, charge: Reservation?, outcome: TaskOutcome) {
        tasks[key] = nil
        inFlight -= 1
        tracker.finished()
        guard transport != nil, !closing else {
            charge?.release()
            return
        }
        switch outcome {
        case .close(let d):
            charge?.release()
            fail(code: d.code, message: d.message)
            return
        case .respond(let response, let token, let grant):
            if let grant { tokens.remember(token, grant) }
            write(response)
            // The request's bytes went with its task; its answer is a few bytes. Held
            // until the answer left, a peer that reads none of its answers kept the
            // writers' pool from every other ingester until its idle timeout.
            charge?.release()
        }
        process()
    }

    /// Writes are flushed once per `process` pass (many answers, one writev).
    private func write(_ response: Wire.Response) {
        guard let transport else { return }
        transport.write(responseFrame(response))
        unflushed = true
    }

    // MARK: limits in time

    /// Called about once a second by the transport.
    func checkTimeouts() {
        guard let transport, !closing else { return }
        let now = NIODeadline.now()
        defer { lastCheck = now }
        // A frame waits for room in the budget for the frame time at most: peers that
        // each announced a large frame and sent no more were let in one at a time,
        // each holding the budget for its own frame time, and an honest put queued behind them all.
        if waitingForBudget {
            countWait(to: now)
            if waitedForBudget > TimeAmount(limits.frameTimeout) {
                leaveBudgetQueue()
                let length = buffer?.peekInteger(endianness: .big, as: UInt32.self) ?? 0
                fail(code: .resourceExhausted,
                     message: "a request of \(length) bytes found no room among the server's large requests in flight for \(limits.frameTimeout); retry later",
                     isRequest: false)
                return
            }
        }
        // Nor may a frame keep its room while the server holds it back for longer:
        // a writer that read none of its answers kept its half-sent put's room, and
        // every other large put waited, until its idle timeout. It is not reading:
        // closed at once, not after an answer it would never take.
        if let held = reserved, !canTakeFrame {
            let since = heldBackWithBudgetSince ?? now
            heldBackWithBudgetSince = since
            if now - since > TimeAmount(limits.frameTimeout) {
                closeNow("closing a connection held back while its frame held room in the budget", ["bytes": "\(held.bytes)"])
                return  // `inactive` gives the room back
            }
        } else {
            heldBackWithBudgetSince = nil
        }
        // A connection the server holds back is not late: its clock stops meanwhile.
        if let started = frameStarted, !canTakeFrame || waitingForBudget {
            frameStarted = started + (now - lastCheck)
        } else if let started = frameStarted, let b = buffer, !hasWholeFrame {
            let length = b.getInteger(at: b.readerIndex, endianness: .big, as: UInt32.self) ?? 0
            let allowed = TimeAmount(limits.frameTimeout) + .seconds(Int64(length >> 20))
            if now - started > allowed {
                closeNow("closing a connection whose frame did not arrive in time", ["bytes": "\(length)"])
                return
            }
        }
        // Idle: nothing running and nothing arriving, with nothing to take, or
        // with frames that wait only because the peer reads none of its answers.
        if inFlight == 0, buffer == nil || !transport.isWritable, now - lastActivity > TimeAmount(limits.idleTimeout) {
            closeNow("closing an idle connection")
        }
    }

    /// Closes without an answer: the peer is not reading one, or not sending.
    private func closeNow(_ why: Logger.Message, _ metadata: Logger.Metadata? = nil) {
        logger.debug(why, metadata: metadata)
        closing = true
        transport?.close()
    }

    /// Answers with an Error for request id 0, then closes the connection.
    /// `isRequest`: the answer is to a frame (counted as an invalid request), not to the connection itself.
    private func fail(code: Wire.ErrorCode, message: String, isRequest: Bool = true) {
        guard !closing else { return }
        closing = true
        if isRequest { dispatcher.metrics.finished(.invalid, error: code, since: .now()) }
        let response = Wire.Response(requestId: 0, body: .error(Wire.Error(code: code, message: message)))
        transport?.write(responseFrame(response))
        transport?.closeAfterFlush()
    }

    // MARK: decoding

    /// Why a frame was not turned into a request: the code, the message, and
    /// the request id to answer (0: the frame is not a Request; close).
    struct Decoded: Error, Sendable {
        var requestId: UInt64
        var code: Wire.ErrorCode
        var message: String
    }

    /// A plain put of images is read in place (one copy of each image);
    /// anything else has its shape checked (clean strings, a bounded number
    /// of sub-messages), then is decoded.
    static func decode(_ frame: ByteBuffer, limits: ServerLimits, knownToken: String? = nil,
                       arena: DecodeArena? = nil) -> Result<Wire.Request, Decoded> {
        frame.withUnsafeReadableBytes { raw -> Result<Wire.Request, Decoded> in
            if let put = Wire.readPutRecordsInPlace(raw, knownToken: knownToken, maxMessages: limits.maxMessagesPerRequest) {
                return .success(put)
            }
            return Wire.decodeCheckedRequest(raw, maxMessages: limits.maxMessagesPerRequest, knownToken: knownToken, arena: arena).mapError { r in
                Decoded(requestId: r.requestId, code: .invalidArgument, message: r.message)
            }
        }
    }
}

/// A flag that outlives its connection's handler, read on other threads.
private final class Gone: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

extension Wire.Request {
    var isPut: Bool { if case .putRecords? = body { return true } else { return false } }
}

extension ByteBuffer {
    /// Whether a frame holds a PutRecords, looked at before decoding.
    var isPutRecordsRequest: Bool { withUnsafeReadableBytes { MessageShape.isPutRecordsRequest($0) } }
}

/// A page's answer frame: the page and at most 32 bytes around it.
let pageFrameCapacity = Wire.pageBytes + 32

/// A response as one frame (length prefix included: the pipeline has no frame encoder on the way out).
private func responseFrame(_ response: Wire.Response) -> ByteBuffer {
    var isPage = false
    if case .getPage? = response.body { isPage = true }
    var buffer = ByteBufferAllocator().buffer(capacity: isPage ? pageFrameCapacity : 256)
    Wire.writeFrame(response, into: &buffer)
    return buffer
}

extension TimeAmount {
    init(_ d: Duration) { self = .nanoseconds(Int64(d.components.seconds) * 1_000_000_000 + d.components.attoseconds / 1_000_000_000) }
}
