import LayerGateWire
import NIOCore
import Synchronization

/// One async client connection on its `ClientLoop`: the requests written and
/// not sent yet, the calls waiting for answers, matched by request id in
/// whatever order the server answers. Anything else the server sends ends
/// the connection: an answer nobody waits for, or bytes that are not a
/// Response. After that every call fails with the error that ended it.
///
/// Loop-confined, except `failure`.
final class ClientSocket: @unchecked Sendable {
    /// Its key in the loop's epoll set.
    var id: UInt64 = 0
    private let socket: UnixSocket
    private unowned let loop: ClientLoop
    private var frames: ResponseFrames
    private var output = ByteBufferAllocator().buffer(capacity: ClientSocket.outputBytes)
    private static let outputBytes = 16 << 10
    private static let keptOutputBytes = 1 << 20
    private var pending: [UInt64: (slot: AnswerSink, index: Int)] = [:]
    /// Entries of `pending` whose caller was cancelled: read and dropped when they come.
    private var abandoned = 0
    /// A call waits for an answer: what the timeout watches.
    private var callsWait: Bool { pending.count > abandoned }
    /// Why the connection ended: later calls fail with it. Set on the loop, read by callers on any thread.
    private let ended = Mutex<ClientError?>(nil)
    private var queuedForFlush = false
    private var watchingWritable = false
    private let timeout: Duration?
    private var lastProgress = ContinuousClock.now

    init(_ socket: UnixSocket, loop: ClientLoop, timeout: Duration?, maxFrameBytes: Int) {
        self.socket = socket
        self.loop = loop
        self.timeout = timeout
        frames = ResponseFrames(maxFrameBytes: maxFrameBytes)
    }

    var descriptor: Int32 { socket.descriptor }

    /// Why it ended, once it has; any thread.
    var failure: ClientError? { ended.withLock { $0 } }

    /// How often its timeout is checked: a quarter of it, from 10 ms to 1 s.
    var checkPeriod: Duration? {
        timeout.map { max(.milliseconds(10), min(.seconds(1), $0 / 4)) }
    }

    /// Writes requests `first`, `first + 1`, … for `bodies`, sent when the loop's pass ends; `slot` takes their answers.
    func send(_ bodies: [Wire.Request.Body], first: UInt64, authToken: String, slot: AnswerSink) {
        if let failure { return slot.fail(bodies.count, failure) }
        if !callsWait { lastProgress = .now }
        for (i, body) in bodies.enumerated() {
            let id = first &+ UInt64(i)
            pending[id] = (slot, i)
            Wire.writeFrame(Wire.Request(requestId: id, authToken: authToken, body: body), into: &output)
        }
        if !queuedForFlush {
            queuedForFlush = true
            loop.noteUnflushed(self)
        }
    }

    /// Sends what the socket takes now; watches for room when it took less.
    func flush() {
        queuedForFlush = false
        guard output.readableBytes > 0, failure == nil else { return }
        do throws(ClientError) {
            if try !socket.write(from: &output) {
                // The server stopped reading (it refused the connection, or is closing it). What it
                // sent before is all in the socket by now: what that does not answer never will be.
                read(untilEmpty: true)
                return end(.connectionClosed)
            }
        } catch {
            return end(error)
        }
        let full = output.readableBytes > 0
        if !full {
            // A large batch grew it: let that go rather than keep it for the connection's life.
            if output.capacity > Self.keptOutputBytes { output = ByteBufferAllocator().buffer(capacity: Self.outputBytes) } else { output.clear() }
        }
        if full != watchingWritable {
            watchingWritable = full
            loop.watchWritable(self, full)
        }
    }

    /// Reads what came, and answers the calls it is for.
    func readable() { read(untilEmpty: false) }

    /// Without `untilEmpty`, a few reads at most, so that one busy connection does not hold up the loop's others.
    private func read(untilEmpty: Bool) {
        do throws(ClientError) {
            for _ in 0..<(untilEmpty ? Int.max : 4) {
                switch try frames.read(from: socket, waiting: false) {
                case .bytes(let n):
                    lastProgress = .now  // any byte is progress: the timeout is for a server that says nothing
                    try frames.take { response throws(ClientError) in
                        guard let p = pending.removeValue(forKey: response.requestId) else { throw .notWaiting(response.requestId) }
                        if case .abandoned = p.slot { abandoned -= 1 }
                        p.slot.complete(p.index, .success(response))
                    }
                    if n < ResponseFrames.readChunk && !untilEmpty { return }
                case .wouldBlock: return
                case .endOfStream: throw .connectionClosed
                }
            }
        } catch {
            end(error)
        }
    }

    /// The task waiting for requests `first ..< first + count` was cancelled:
    /// each one not answered yet fails with `cancelled`, and its answer is
    /// read and dropped when it comes. The timeout watches only the calls
    /// still waiting: a server that holds an abandoned request (a GetPage
    /// waiting for its LSN) is no reason to end the connection.
    func abandon(first: UInt64, count: Int) {
        for i in 0..<count {
            let id = first &+ UInt64(i)
            guard let p = pending[id] else { continue }
            if case .abandoned = p.slot { continue }
            pending[id] = (.abandoned, p.index)
            abandoned += 1
            p.slot.complete(p.index, .failure(.cancelled))
        }
    }

    /// Fails every waiting call with `timedOut` when they have waited that long with no byte from the server.
    func checkTimeout() {
        guard let timeout, callsWait, ContinuousClock.now - lastProgress > timeout else { return }
        end(.timedOut(milliseconds: Int(timeout.clampedMilliseconds)))
    }

    /// Ends the connection: the socket closes, and every waiting call fails with `error`.
    func end(_ error: ClientError) {
        let first = ended.withLock { e -> Bool in
            guard e == nil else { return false }
            e = error
            return true
        }
        guard first else { return }
        loop.unregister(self)
        socket.close()
        frames.clear()
        output.clear()
        let waiting = pending
        pending = [:]
        abandoned = 0
        for p in waiting.values { p.slot.complete(p.index, .failure(error)) }
    }
}
