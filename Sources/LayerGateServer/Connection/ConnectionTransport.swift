import NIOCore

/// What a connection's protocol logic (`Connection`) needs of the socket
/// under it. Two transports implement it: the server's own epoll loop
/// (`SocketConnection`, the data path of `layergated`) and a SwiftNIO channel
/// (`ConnectionHandler`, for `--event-loop nio` and the in-process tests on
/// an `EmbeddedChannel`). Every call is made on the transport's loop.
protocol ConnectionTransport: AnyObject, SendableMetatype {
    /// False while unsent answers are over the high water mark; the
    /// connection takes no new frame until `writabilityChanged`.
    var isWritable: Bool { get }

    /// Appends an answer built in place by `build`, which may append nothing.
    /// Returns what `build` returns. This is how a cached page goes from the
    /// cache into the bytes the socket is written from in one copy.
    func writeFrame<R>(_ build: (inout ByteBuffer) -> R) -> R

    /// Appends a whole answer frame.
    func write(_ frame: ByteBuffer)

    /// True where answers may leave a page out for `insertSharedPage` to send
    /// from where it is (the epoll loop, whose sends gather it).
    var sendsSharedPages: Bool { get }

    /// Puts `page` into the answer just appended, before its last
    /// `beforeLast` bytes; the page is sent from where it is, not copied.
    func insertSharedPage(_ page: [UInt8], beforeLast: Int)

    /// Sends what was appended (many answers, one system call).
    func flush()

    /// Asks for more bytes: the connection's `received` is called once more.
    func read()

    /// Closes now; `inactive` follows.
    func close()

    /// Sends what was appended, then closes; closes anyway after
    /// `closeGrace` if the peer has not read it all by then.
    func closeAfterFlush()

    /// The loop's own reads of the disk, for GetPage misses; nil where the
    /// loop has none (SwiftNIO, or a kernel without io_uring): read threads serve them.
    var kernelReads: KernelReads? { get }

    /// An empty buffer the size of a read, for the start of a frame the
    /// connection keeps between reads; nil where reads come in buffers of
    /// their own (SwiftNIO).
    func spareReadBuffer() -> ByteBuffer?

    /// A buffer from `spareReadBuffer`, emptied, for the next one to ask.
    func recycleReadBuffer(_ buffer: ByteBuffer)
}

/// How long a connection closing after its last answers waits for its peer
/// to read them. A peer that reads nothing would otherwise keep the
/// connection, its answers and its descriptor for as long as it likes: the
/// idle timeout no longer applies to a connection that is closing.
let closeGrace: Duration = .seconds(5)

extension ConnectionTransport {
    func spareReadBuffer() -> ByteBuffer? { nil }
    func recycleReadBuffer(_ buffer: ByteBuffer) {}
    var sendsSharedPages: Bool { false }
    func insertSharedPage(_ page: [UInt8], beforeLast: Int) {
        preconditionFailure("a page left out of its answer on a transport that does not send shared pages")
    }
}

/// Runs closures on one thread, in order, from any thread.
protocol LoopExecutor: Sendable {
    func execute(_ task: @escaping @Sendable () -> Void)
}

/// A loop-confined value carried through other threads, touched only back on its loop.
struct LoopBound<Value: AnyObject>: @unchecked Sendable {
    private let value: Value
    let loop: any LoopExecutor

    init(_ value: Value, loop: any LoopExecutor) {
        self.value = value
        self.loop = loop
    }

    /// Runs `body` with the value on its loop.
    func hop(_ body: @escaping @Sendable (Value) -> Void) {
        let me = self
        loop.execute { body(me.value) }
    }
}

/// A SwiftNIO event loop as a `LoopExecutor`.
struct NIOLoopExecutor: LoopExecutor {
    let eventLoop: any EventLoop
    func execute(_ task: @escaping @Sendable () -> Void) { eventLoop.execute(task) }
}

/// The loop of a connection not yet attached to a transport: nothing runs on it,
/// and nothing is asked of it (a connection does nothing before `attach`).
struct NoLoop: LoopExecutor {
    func execute(_ task: @escaping @Sendable () -> Void) {}
}
