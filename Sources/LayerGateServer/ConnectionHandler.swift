import LayerGateWire
import Logging
import NIOCore

/// One client connection, after the frame decoder: decodes each frame as a
/// `Request`, runs it in its own task (so a slow disk read or a compaction
/// never holds up cache hits behind it), and writes responses as they finish,
/// in any order, each with its request's id.
///
/// Back-pressure: the handler stops asking the socket for more bytes while
/// `maxInFlight` requests are running or while the channel is not writable
/// (responses the client has not read fill NIO's write buffer past its high
/// water mark). So a client that sends without reading cannot make the server
/// buffer without bound: its own socket buffers fill and its writes block.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let dispatcher: Dispatcher
    private let peer: PeerIdentity
    private let maxInFlight: Int
    private let tracker: InFlightTracker
    private let logger: Logger
    private var inFlight = 0
    private var readPending = false
    private var closing = false
    private var needsFlush = false

    init(dispatcher: Dispatcher, peer: PeerIdentity, maxInFlight: Int, tracker: InFlightTracker, logger: Logger) {
        self.dispatcher = dispatcher
        self.peer = peer
        self.maxInFlight = maxInFlight
        self.tracker = tracker
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        dispatcher.connectionCount.add(1, ordering: .relaxed)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        dispatcher.connectionCount.subtract(1, ordering: .relaxed)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        let request: Wire.Request
        do {
            request = try frame.withUnsafeReadableBytes { raw in try Wire.decodeRequest(raw) }
        } catch {
            // Bytes that are not a Request: say so (request id 0) and close.
            fail(context: context, code: .invalidArgument, message: "frame does not decode as a layergate.v1.Request")
            return
        }
        if let response = dispatcher.handleInline(request) {
            // Served from memory and cached blocks: no task, no hand-off; flushed once per read batch.
            context.write(wrapOutboundOut(responseFrame(response, allocator: context.channel.allocator)), promise: nil)
            needsFlush = true
            return
        }
        inFlight += 1
        tracker.started()
        let dispatcher = self.dispatcher, peer = self.peer
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        Task {
            let response = await dispatcher.handle(request, peer: peer)
            let frame = responseFrame(response, allocator: ByteBufferAllocator())
            bound.eventLoop.execute {
                let (handler, context) = bound.value
                handler.finished(context: context, frame: frame)
            }
        }
    }

    private func finished(context: ChannelHandlerContext, frame: ByteBuffer) {
        inFlight -= 1
        tracker.finished()
        if context.channel.isActive {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        }
        resumeReadingIfPossible(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if inFlight >= maxInFlight || !context.channel.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readPending && inFlight < maxInFlight && context.channel.isWritable {
            readPending = false
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? FrameError, case .frameTooLarge = e {
            fail(context: context, code: .frameTooLarge, message: "\(e)")
        } else if !closing {
            logger.debug("connection error", metadata: ["error": "\(error)"])
            closing = true
            context.close(promise: nil)
        }
    }

    /// Answers with an Error for request id 0, then closes the connection.
    private func fail(context: ChannelHandlerContext, code: Wire.ErrorCode, message: String) {
        guard !closing else { return }
        closing = true
        let channel = context.channel
        let response = Wire.Response(requestId: 0, body: .error(Wire.Error(code: code, message: message)))
        context.writeAndFlush(wrapOutboundOut(responseFrame(response, allocator: channel.allocator))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// Counts requests in flight across all connections, for graceful shutdown.
final class InFlightTracker: Sendable {
    private let count = Atomic<Int>(0)
    func started() { count.add(1, ordering: .relaxed) }
    func finished() { count.subtract(1, ordering: .relaxed) }
    var current: Int { count.load(ordering: .relaxed) }
}

import Synchronization

/// A response as one frame (length prefix included: the pipeline has no frame encoder on the way out).
private func responseFrame(_ response: Wire.Response, allocator: ByteBufferAllocator) -> ByteBuffer {
    var isPage = false
    if case .getPage? = response.body { isPage = true }
    var buffer = allocator.buffer(capacity: isPage ? 8192 + 32 : 256)
    Wire.writeFrame(response, into: &buffer)
    return buffer
}
