import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Synchronization

/// `GET /metrics` over HTTP/1.1: the Prometheus text format, nothing else.
/// One route, so NIOHTTP1 and no framework. It has no authentication: bind it
/// to localhost or a network only the monitoring system reaches.
enum MetricsEndpoint {
    /// Connections served at once; more are closed at accept. Scrapers are few.
    static let maxConnections = 64
    /// A connection that sends nothing for this long is closed.
    static let idleTimeout = TimeAmount.seconds(30)

    static func bind(_ address: MetricsAddress, group: any EventLoopGroup, registry: PrometheusCollectorRegistry,
                     collector: ScrapeCollector, logger: Logger) async throws -> any Channel {
        let open = Atomic<Int>(0)
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 32)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                guard open.add(1, ordering: .relaxed).newValue <= maxConnections else {
                    open.subtract(1, ordering: .relaxed)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in open.subtract(1, ordering: .relaxed) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try sync.addHandler(MetricsHTTPHandler(registry: registry, collector: collector, logger: logger))
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}

/// Answers each request once its end arrives; a body (no scraper sends one) is dropped as it comes.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private let collector: ScrapeCollector
    private let logger: Logger
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, collector: ScrapeCollector, logger: Logger) {
        (self.registry, self.collector, self.logger) = (registry, collector, logger)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    /// Not HTTP, or a head too large: the error handler before this one answered 400; the connection ends here.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("metrics connection closed on an error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        var body: [UInt8]
        switch (head.method, path) {
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            collector.collect()
            body = []
            body.reserveCapacity(64 << 10)
            registry.emit(into: &body)
            status = .ok
            headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
        case (_, "/metrics"):
            status = .methodNotAllowed
            headers.add(name: "Allow", value: "GET, HEAD")
            body = Array("use GET /metrics\n".utf8)
        default:
            status = .notFound
            body = Array("layergated serves only /metrics here\n".utf8)
        }
        if status != .ok { headers.add(name: "Content-Type", value: "text/plain; charset=utf-8") }
        headers.add(name: "Content-Length", value: "\(body.count)")
        let keepAlive = head.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }
}
