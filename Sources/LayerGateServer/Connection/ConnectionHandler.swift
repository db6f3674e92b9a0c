import LayerGateStorage
import Logging
import NIOCore

/// A connection on a SwiftNIO channel: `--event-loop nio`, and the
/// in-process tests on an `EmbeddedChannel`. The protocol is `Connection`'s;
/// this only carries bytes and events between it and the pipeline.
final class ConnectionHandler: ChannelDuplexHandler, ConnectionTransport {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var connection: Connection<ConnectionHandler>?
    private var context: ChannelHandlerContext?
    private var timer: RepeatedTask?
    private let logger: Logger

    init(_ settings: ConnectionSettings, peer: PeerIdentity) {
        logger = settings.logger
        connection = Connection(settings, peer: peer)
    }

    // MARK: the pipeline's events, for the connection

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connection?.attach(self, loop: NIOLoopExecutor(eventLoop: context.eventLoop))
    }

    /// The context and the connection hold this handler: keeping them past
    /// removal would keep all three for good, for every connection ever made.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        connection?.detach()
        connection = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        connection?.active()
        let check = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            check.value.connection?.checkTimeouts()
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        connection?.inactive()
        ClosedConnections.noteClosed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection?.received(unwrapInboundIn(data))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent { connection?.endOfInput() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection?.readComplete()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) { connection?.readRequested() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection?.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: the transport, for the connection

    var isWritable: Bool { context?.channel.isWritable ?? false }

    var kernelReads: KernelReads? { nil }

    func writeFrame<R>(_ build: (inout ByteBuffer) -> R) -> R {
        var out = (context?.channel.allocator ?? ByteBufferAllocator()).buffer(capacity: pageFrameCapacity)
        let result = build(&out)
        if out.readableBytes > 0 { context?.write(wrapOutboundOut(out), promise: nil) }
        return result
    }

    func write(_ frame: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    func flush() { context?.flush() }

    func read() { context?.read() }

    func close() { context?.close(promise: nil) }

    func closeAfterFlush() {
        guard let context else { return }
        let channel = context.channel
        // A peer that reads none of it never lets the write below complete.
        let anyway = context.eventLoop.scheduleTask(in: TimeAmount(closeGrace)) { channel.close(promise: nil) }
        // Writes complete in order: once this empty one has, the answer that explains the close has left.
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            anyway.cancel()
            channel.close(promise: nil)
        }
    }
}
