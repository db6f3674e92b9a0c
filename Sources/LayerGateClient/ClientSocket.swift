import LayerGateWire
import NIOCore
import Synchronization

/// One async client connection on its `ClientLoop`: the requests written and
/// not sent yet, the calls waiting for answers, matched by request id in
/// whatever order the server answers. Anything else the server sends ends
/// the connection: an answer nobody waits for, or bytes that are not a
/// Response. After that every call fails with the error that ended it.
///
/// Loop-confined, except `isOpen`.
final class ClientSocket: @unchecked Sendable {
    /// Its key in the loop's epoll set.
    var id: UInt64 = 0
    private let socket: UnixSocket
    private unowned let loop: ClientLoop
    private var frames: ResponseFrames
    private var output = ByteBufferAllocator().buffer(capacity: 16 << 10)
    private var pending: [UInt64: (slot: ResponseSlot, index: Int)] = [:]
    /// Why the connection ended: later calls fail with it.
    private var failure: ClientError?
    /// The server stopped reading (it refused the connection, or is closing
    /// it): nothing more is sent, but what it answered before is still read.
    private var peerStoppedReading = false
    private var queuedForFlush = false
    private var watchingWritable = false
    private let timeout: Duration?
    private var lastProgress = ContinuousClock.now
    private let open = Atomic<Bool>(true)

    init(_ socket: UnixSocket, loop: ClientLoop, timeout: Duration?, maxFrameBytes: Int) {
        self.socket = socket
        self.loop = loop
        self.timeout = timeout
        frames = ResponseFrames(maxFrameBytes: maxFrameBytes)
    }

    var descriptor: Int32 { socket.descriptor }

    /// False once it ended; any thread.
    var isOpen: Bool { open.load(ordering: .relaxed) }

    /// How often its timeout is checked: a quarter of it, from 10 ms to 1 s.
    var checkPeriod: Duration? {
        timeout.map { max(.milliseconds(10), min(.seconds(1), $0 / 4)) }
    }

    /// Writes requests `first`, `first + 1`, … for `bodies`, sent when the loop's pass ends; `slot` takes their answers.
    func send(_ bodies: [Wire.Request.Body], first: UInt64, authToken: String, slot: ResponseSlot) {
        if let failure {
            for i in bodies.indices { slot.complete(i, .failure(failure)) }
            return
        }
        if pending.isEmpty { lastProgress = .now }
        for (i, body) in bodies.enumerated() {
            let id = first &+ UInt64(i)
            pending[id] = (slot, i)
            if !peerStoppedReading { Wire.writeFrame(Wire.Request(requestId: id, authToken: authToken, body: body), into: &output) }
        }
        if !queuedForFlush {
            queuedForFlush = true
            loop.noteUnflushed(self)
        }
    }

    /// Sends what the socket takes now; watches for room when it took less.
    func flush() {
        queuedForFlush = false
        guard failure == nil, output.readableBytes > 0 else { return }
        do throws(ClientError) {
            if try !socket.write(from: &output) {
                peerStoppedReading = true
                output.clear()
            }
        } catch {
            return end(error)
        }
        let full = output.readableBytes > 0
        if output.readableBytes == 0 { output.clear() }
        if full != watchingWritable {
            watchingWritable = full
            loop.watchWritable(self, full)
        }
    }

    /// Reads what came, and answers the calls it is for.
    func readable() {
        do throws(ClientError) {
            // A few reads at most, so that one busy connection does not hold up the loop's others.
            for _ in 0..<4 {
                switch try frames.read(from: socket, waiting: false) {
                case .bytes(let n):
                    lastProgress = .now  // any byte is progress: the timeout is for a server that says nothing
                    try frames.take { response throws(ClientError) in
                        guard let p = pending.removeValue(forKey: response.requestId) else { throw .notWaiting(response.requestId) }
                        p.slot.complete(p.index, response.outcome())
                    }
                    if n < ResponseFrames.readChunk { return }
                case .wouldBlock: return
                case .endOfStream: throw .connectionClosed
                }
            }
        } catch {
            end(error)
        }
    }

    /// Fails every waiting call with `timedOut` when they have waited that long with no byte from the server.
    func checkTimeout() {
        guard let timeout, !pending.isEmpty, ContinuousClock.now - lastProgress > timeout else { return }
        end(.timedOut(milliseconds: Int(timeout.clampedMilliseconds)))
    }

    /// Ends the connection: the socket closes, and every waiting call fails with `error`.
    func end(_ error: ClientError) {
        guard failure == nil else { return }
        failure = error
        open.store(false, ordering: .relaxed)
        loop.unregister(self)
        socket.close()
        frames.clear()
        output.clear()
        let waiting = pending
        pending = [:]
        for p in waiting.values { p.slot.complete(p.index, .failure(error)) }
    }
}
