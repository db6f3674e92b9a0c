import CSystemShims
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// One client socket on the epoll loop: the transport under a `Connection`.
/// Everything here runs on the loop thread.
///
/// Answers are appended to one buffer (`out`), a cached page built straight
/// into it, and sent with one `send` per pass (one `sendmsg` that gathers the
/// in-memory images left out of it, when there are any: `SharedPages`). `out` comes from the loop's
/// spares and goes back once sent, so a GetPage served from the cache
/// allocates nothing, and an idle connection holds no buffer. Unsent bytes
/// over `highWater` make the connection unwritable until they fall under
/// `lowWater` (SwiftNIO's defaults).
final class SocketConnection: ConnectionTransport {
    static let highWater = 64 << 10
    static let lowWater = 32 << 10

    let id: UInt64
    let fd: Int32
    /// Strong, though the server holds this connection too: the server lets
    /// go of a connection when it closes and closes all of them at shutdown,
    /// which ends the cycle. An `unowned` reference cost a check and a retain on every use.
    private let server: EpollServer
    @exclusivity(unchecked) private(set) var connection: Connection<SocketConnection>?

    // `@exclusivity(unchecked)`: loop-thread state, never accessed under an
    // access to itself (`writeFrame` moves `out` into a local first); the
    // runtime's checks were a few percent of a cached GetPage's CPU.
    @exclusivity(unchecked) private var out: ByteBuffer?
    /// Pages sent from where they are, between `out`'s bytes.
    @exclusivity(unchecked) private var shared = SharedPages()
    /// Bytes appended to `out` and bytes sent, since the connection began.
    @exclusivity(unchecked) private var appended = 0
    @exclusivity(unchecked) private var sent = 0

    @exclusivity(unchecked) private(set) var isWritable = true
    /// The connection asked for bytes and has not had them yet.
    @exclusivity(unchecked) private var wantsRead = false
    /// What the epoll set watches for this socket.
    @exclusivity(unchecked) private var interest = UInt32(EPOLLIN.rawValue)
    @exclusivity(unchecked) private(set) var closed = false
    /// Since when the connection waits for its last answer to leave, to close.
    private(set) var closingSince: ContinuousClock.Instant?

    var kernelReads: KernelReads? { server.kernelReads }

    init(id: UInt64, fd: Int32, server: EpollServer, connection: Connection<SocketConnection>) {
        self.id = id
        self.fd = fd
        self.server = server
        self.connection = connection
    }

    // MARK: events from the loop

    /// The socket is readable: one read, of up to the loop's buffer or into
    /// the connection's own for the rest of a large frame.
    func readable() {
        guard wantsRead, !closed else {
            // Held back (or closing): stop watching until the connection asks again.
            setInterest(interest & ~UInt32(EPOLLIN.rawValue))
            return
        }
        var failure: Int32 = 0
        let receive = { [fd] (space: UnsafeMutableRawBufferPointer) -> Int in
            let n = recv(fd, space.baseAddress, space.count, Int32(MSG_DONTWAIT))
            if n < 0 { failure = errno }
            return max(n, 0)
        }
        // Off before the connection sees the bytes: handling them may ask for more (`read()`).
        wantsRead = false
        // The rest of a large frame goes straight into its own buffer; anything else through the loop's.
        let n: Int
        if let inPlace = connection?.receiveInPlace(receive) {
            n = inPlace
        } else {
            var bytes = server.takeReadBuffer()
            n = bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: 0, receive)
            if n > 0 { connection?.received(bytes) }
            server.giveBack(bytes)
        }
        guard n > 0 else {
            if n == 0 && failure == 0 {
                // End of input: the peer shut its sending side and may still read (a whole close comes as EPOLLHUP).
                wantsRead = false
                setInterest(interest & ~UInt32(EPOLLIN.rawValue))
                connection?.endOfInput()
            } else if failure != EAGAIN && failure != EINTR {
                close()  // the peer is gone
            } else {
                wantsRead = true  // nothing came: still waiting for it
            }
            return
        }
        connection?.readComplete()
        connection?.readRequested()
    }

    // MARK: ConnectionTransport

    func spareReadBuffer() -> ByteBuffer? { server.takeSpareReadBuffer() }

    func recycleReadBuffer(_ buffer: ByteBuffer) { server.giveBackSpare(buffer) }

    func writeFrame<R>(_ build: (inout ByteBuffer) -> R) -> R {
        var buffer = out ?? server.takeOutBuffer()
        out = nil  // `buffer` is then the one reference: appended to in place
        let before = buffer.writerIndex
        let result = build(&buffer)
        appended += buffer.writerIndex - before
        out = buffer
        updateWritability()
        return result
    }

    func write(_ frame: ByteBuffer) {
        guard !closed else { return }
        _ = writeFrame { $0.writeImmutableBuffer(frame) }
    }

    var sendsSharedPages: Bool { true }

    func insertSharedPage(_ page: [UInt8], beforeLast: Int) {
        guard !closed else { return }
        shared.insert(page, at: appended - beforeLast)
        appended += page.count
        updateWritability()
    }

    /// Sends what is unsent: `out`'s bytes, with the shared pages between them when there are any.
    func flush() {
        guard !closed else { return }
        if sent < appended {
            var buffer = out ?? server.takeOutBuffer()
            out = nil  // `buffer` is then the one reference: appended to and cleared in place
            while sent < appended {
                let n = buffer.withUnsafeReadableBytes { bytes in
                    shared.isEmpty ? send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                        : shared.send(fd, buffered: bytes, from: sent)
                }
                if n > 0 {
                    buffer.moveReaderIndex(forwardBy: shared.isEmpty ? n : shared.sent(from: sent, to: sent + n))
                    sent += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else if n < 0 && errno == EAGAIN {
                    break
                } else {
                    close()  // the peer is gone (EPIPE, ECONNRESET)
                    return
                }
            }
            if buffer.readableBytes == 0 && shared.isEmpty {
                buffer.clear()
                server.giveBackOut(buffer)
            } else {
                if buffer.readerIndex > buffer.capacity / 2 { buffer.discardReadBytes() }
                out = buffer
            }
        }
        let pending = appended - sent
        setInterest(pending > 0 ? interest | UInt32(EPOLLOUT.rawValue) : interest & ~UInt32(EPOLLOUT.rawValue))
        updateWritability()
        if pending == 0, closingSince != nil { close() }
    }

    /// Shutdown: no byte more is read; the connection answers what it holds
    /// whole and closes once those answers are sent (`Connection.endOfInput`).
    func endInput() {
        guard !closed else { return }
        wantsRead = false
        setInterest(interest & ~UInt32(EPOLLIN.rawValue))
        connection?.endOfInput()
    }

    func read() {
        guard !closed, closingSince == nil else { return }
        wantsRead = true
        setInterest(interest | UInt32(EPOLLIN.rawValue))
    }

    func close() {
        guard !closed else { return }
        closed = true
        isWritable = false
        out = nil
        shared.removeAll()
        sent = appended
        server.forget(self)
        let connection = self.connection
        self.connection = nil
        connection?.inactive()
        connection?.detach()
    }

    func closeAfterFlush() {
        guard !closed, closingSince == nil else { return }
        closingSince = .now
        wantsRead = false
        flush()
    }

    // MARK: bookkeeping

    private func updateWritability() {
        let pending = appended - sent
        if isWritable, pending > Self.highWater {
            isWritable = false
        } else if !isWritable, !closed, pending < Self.lowWater {
            isWritable = true
            server.noteWritable(self)  // told after the event: never from inside the connection's own call
        }
    }

    private func setInterest(_ wanted: UInt32) {
        guard wanted != interest, !closed else { return }
        interest = wanted
        server.watch(self, for: wanted)
    }
}
