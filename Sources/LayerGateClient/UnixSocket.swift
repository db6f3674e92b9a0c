#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// A connected AF_UNIX stream socket, owned by one `LayerGateConnection`
/// (blocking) or one `ClientSocket` (non-blocking, on a `ClientLoop`).
/// The client's reads and writes of raw memory are here (and the loop's
/// epoll and eventfd calls): every read and write goes through a `ByteBuffer`.
///
/// For `LayerGateConnection` the descriptor blocks, with the connection's
/// timeout as its receive timeout, and every send and every read that must
/// not wait says so (`MSG_DONTWAIT`). Why: a call with nothing left to send
/// waits for its answer in `recv` itself, one system call where `poll` and
/// then `recv` took two (the Swift client's share of a round trip, issue
/// goal 3). Every send is `MSG_NOSIGNAL`: a peer gone is an error, never a
/// SIGPIPE, and the process's signal dispositions are left as they are.
final class UnixSocket {
    private var fd: Int32

    enum ReadOutcome { case bytes(Int), wouldBlock, endOfStream }

    /// Connects, then gives the descriptor `timeoutMs` (−1: none) as its
    /// receive timeout. With a timeout, a server whose listen backlog is full
    /// (a Unix socket answers EAGAIN then) is retried until `timeoutMs` has
    /// passed; without, connect waits for it.
    convenience init(path: String, timeoutMs: Int32) throws(ClientError) {
        try self.init(unconnected: path, nonBlocking: timeoutMs >= 0)
        let deadline = ContinuousClock.now + .milliseconds(max(0, timeoutMs))
        while true {
            let e = attemptConnect()
            if e == 0 { break }
            if e == EAGAIN && timeoutMs >= 0 && ContinuousClock.now < deadline {
                usleep(Self.backlogRetryMicroseconds)
                continue
            }
            throw connectFailed(e, timeoutMs: timeoutMs)
        }
        let ms = max(1, timeoutMs)  // a receive timeout of 0 would wait for ever
        var wait = timeval(tv_sec: Int(ms / 1000), tv_usec: Int(ms % 1000) * 1000)
        guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0,
            timeoutMs < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size)) == 0
        else {
            throw connectFailed(errno, timeoutMs: timeoutMs)
        }
    }

    /// Connects without blocking a thread, for an event loop (`ClientLoop`):
    /// the descriptor stays non-blocking. A full backlog is retried as above,
    /// sleeping the task between tries.
    static func connect(path: String, timeoutMs: Int32) async throws(ClientError) -> UnixSocket {
        let s = try UnixSocket(unconnected: path, nonBlocking: true)
        let deadline = ContinuousClock.now + .milliseconds(max(0, timeoutMs))
        while true {
            let e = s.attemptConnect()
            if e == 0 { return s }
            if e == EAGAIN && (timeoutMs < 0 || ContinuousClock.now < deadline) && !Task.isCancelled {
                try? await Task.sleep(for: .microseconds(backlogRetryMicroseconds))
                continue
            }
            throw s.connectFailed(Task.isCancelled ? ECANCELED : e, timeoutMs: timeoutMs)
        }
    }

    private let path: String
    private var address = sockaddr_un()
    private static let backlogRetryMicroseconds: UInt32 = 5000

    private init(unconnected path: String, nonBlocking: Bool) throws(ClientError) {
        self.path = path
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .transport("socket path \(path) is longer than a Unix socket address allows")
        }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0), 0)
        guard fd >= 0 else { throw .transport("socket(): \(Self.reason(errno))") }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { dst in for (i, b) in bytes.enumerated() { dst[i] = b } }
    }

    /// One connect: 0, or its errno (never EINTR: that is tried again).
    private func attemptConnect() -> Int32 {
        while true {
            let r = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if r == 0 { return 0 }
            if errno != EINTR { return errno }
        }
    }

    /// Closes the socket and words why the connect failed: a backlog still full when the timeout passed is a timeout.
    private func connectFailed(_ e: Int32, timeoutMs: Int32) -> ClientError {
        close()
        if e == EAGAIN && timeoutMs >= 0 { return .timedOut(milliseconds: Int(timeoutMs)) }
        return .transport("connect to \(path): \(Self.reason(e))")
    }

    deinit { close() }

    var isOpen: Bool { fd >= 0 }
    /// For an epoll set (`ClientLoop`); -1 once closed.
    var descriptor: Int32 { fd }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// Writes as much of `buffer`'s readable bytes as the socket takes now.
    /// Returns false when the peer no longer reads (what it sent before can still be read).
    func write(from buffer: inout ByteBuffer) throws(ClientError) -> Bool {
        var failure: Int32 = 0
        while buffer.readableBytes > 0 {
            let n = buffer.withUnsafeReadableBytes { b in Glibc.send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 {
                buffer.moveReaderIndex(forwardBy: n)
                continue
            }
            if errno == EINTR { continue }
            if errno != EAGAIN && errno != EWOULDBLOCK { failure = errno }
            break
        }
        if failure == EPIPE || failure == ECONNRESET { return false }
        if failure != 0 { throw .transport("write to layergated: \(Self.reason(failure))") }
        return true
    }

    /// Reads what is there, up to `maximum` bytes, onto the end of `buffer`.
    /// With `waiting`, first waits for a byte up to the connection's timeout
    /// (`wouldBlock` then means it passed).
    func read(into buffer: inout ByteBuffer, maximum: Int, waiting: Bool) throws(ClientError) -> ReadOutcome {
        let flags = waiting ? 0 : Int32(MSG_DONTWAIT)
        while true {
            var result = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: maximum) { b in
                result = Glibc.recv(fd, b.baseAddress, min(b.count, maximum), flags)
                return max(0, result)
            }
            if result > 0 { return .bytes(result) }
            if result == 0 { return .endOfStream }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            if e == ECONNRESET { return .endOfStream }
            throw .transport("read from layergated: \(Self.reason(e))")
        }
    }

    /// Waits until the socket is readable or writable. Returns false when
    /// `timeoutMs` (−1: forever) passed with neither.
    func waitReadableOrWritable(timeoutMs: Int32) throws(ClientError) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN) | Int16(POLLOUT), revents: 0)
        while true {
            let r = poll(&p, 1, timeoutMs)
            if r > 0 { return true }
            if r == 0 { return false }
            if errno != EINTR { throw .transport("poll on the layergated socket: \(Self.reason(errno))") }
        }
    }

    private static func reason(_ e: Int32) -> String { String(cString: strerror(e)) + " (errno \(e))" }
}
