import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Synchronization

/// `GET /metrics` over HTTP/1.1: the Prometheus text format, nothing else.
/// One route, so NIOHTTP1 and no framework. It has no authentication: bind it
/// to localhost or a network only the monitoring system reaches.
///
/// It runs on its own event-loop thread, so a flood of scrapes costs a core,
/// not the GetPage loop; a rendering is reused for `renderInterval`; each
/// connection is answered one request at a time and is not read meanwhile, so
/// a peer that sends without reading holds one answer, not thousands.
enum MetricsEndpoint {
    /// A connection that sends nothing for this long is closed.
    static let idleTimeout = TimeAmount.seconds(30)
    /// Scrapes closer together than this get the same text.
    static let renderInterval = Duration.milliseconds(100)
    /// Requests a connection may have sent ahead of their answers; past it, it is closed.
    static let maxQueuedRequests = 64

    /// At most `maxConnections` connections are held at once (the
    /// descriptor plan's share). A new one past it evicts the connection
    /// idle longest (a slow or silent peer), so they cannot lock a scraper out.
    static func bind(_ address: MetricsAddress, group: any EventLoopGroup, registry: PrometheusCollectorRegistry,
                     collector: ScrapeCollector, maxConnections: Int, logger: Logger) async throws -> any Channel {
        let connections = MetricsConnections(capacity: maxConnections)
        let page = RenderedMetrics(registry: registry, collector: collector)
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 32)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Scrape requests are small: small reads keep what one read can queue small.
            .childChannelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 4096))
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelInitializer { channel in
                let id = connections.admit(channel)
                channel.closeFuture.whenComplete { _ in connections.remove(id) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try sync.addHandler(MetricsHTTPHandler(page: page, connection: id, connections: connections, logger: logger))
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}

/// The open metrics connections, and which of them is serving a request.
final class MetricsConnections: Sendable {
    private struct Entry {
        let channel: any Channel
        var idleSince: NIODeadline?
    }

    private let capacity: Int
    private let state = Mutex<(next: Int, open: [Int: Entry])>((0, [:]))

    init(capacity: Int) { self.capacity = capacity }

    /// Registers `channel`; when full, closes the connection idle longest (or,
    /// if every one is serving, the new one).
    func admit(_ channel: any Channel) -> Int {
        let (id, evict) = state.withLock { s -> (Int, (any Channel)?) in
            var evict: (any Channel)?
            if s.open.count >= capacity {
                let oldest = s.open.filter { $0.value.idleSince != nil }.min { $0.value.idleSince! < $1.value.idleSince! }
                if let oldest {
                    s.open[oldest.key] = nil
                    evict = oldest.value.channel
                } else {
                    evict = channel
                }
            }
            s.next += 1
            if evict !== channel { s.open[s.next] = Entry(channel: channel, idleSince: .now()) }
            return (s.next, evict)
        }
        evict?.close(promise: nil)
        return id
    }

    func serving(_ id: Int, _ busy: Bool) {
        state.withLock { s in s.open[id]?.idleSince = busy ? nil : .now() }
    }

    func remove(_ id: Int) { state.withLock { _ = $0.open.removeValue(forKey: id) } }
}

/// The exposition text, rendered at most once per `MetricsEndpoint.renderInterval`.
final class RenderedMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let collector: ScrapeCollector
    private let last = Mutex<(at: ContinuousClock.Instant, bytes: [UInt8])?>(nil)

    init(registry: PrometheusCollectorRegistry, collector: ScrapeCollector) {
        (self.registry, self.collector) = (registry, collector)
    }

    func bytes() -> [UInt8] {
        last.withLock { last in
            if let l = last, ContinuousClock.now - l.at < MetricsEndpoint.renderInterval { return l.bytes }
            collector.collect()
            var body: [UInt8] = []
            body.reserveCapacity(last?.bytes.count ?? 32 << 10)
            registry.emit(into: &body)
            last = (.now, body)
            return body
        }
    }
}

/// Answers one request at a time: the next request is not read until the
/// answer before it has reached the socket. A body (no scraper sends one) is
/// dropped as it comes. CONNECT and protocol upgrades are refused at their
/// head, since the HTTP decoder would buffer everything after them.
final class MetricsHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let page: RenderedMetrics
    private let connection: Int
    private let connections: MetricsConnections
    private let logger: Logger
    private var head: HTTPRequestHead?
    /// Whole requests read ahead of their answers (pipelined), oldest first.
    private var waiting: [HTTPRequestHead] = []
    /// An answer is being written; reads wait until it reached the socket.
    private var answering = false
    private var readHeld = false

    init(page: RenderedMetrics, connection: Int, connections: MetricsConnections, logger: Logger) {
        (self.page, self.connection, self.connections, self.logger) = (page, connection, connections, logger)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            connections.serving(connection, true)
            if h.method == .CONNECT || h.headers.contains(name: "upgrade") {
                answer(h, .badRequest, "layergated serves only GET /metrics here; no CONNECT, no upgrades\n", close: true,
                       context: context)
                return
            }
            head = h
        case .body: break
        case .end:
            guard let h = head else { return }
            head = nil
            waiting.append(h)
            guard waiting.count <= MetricsEndpoint.maxQueuedRequests else {
                logger.debug("metrics connection closed: too many requests ahead of their answers")
                context.close(promise: nil)
                return
            }
            serveNext(context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if answering || !waiting.isEmpty { readHeld = true } else { context.read() }
    }

    private func serveNext(context: ChannelHandlerContext) {
        guard !answering, !waiting.isEmpty else { return }
        respond(to: waiting.removeFirst(), context: context)
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
        switch (head.method, Self.path(of: head.uri)) {
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            answer(head, .ok, page.bytes(), contentType: "text/plain; version=0.0.4; charset=utf-8", context: context)
        case (_, "/metrics"):
            answer(head, .methodNotAllowed, "use GET /metrics\n", extra: [("Allow", "GET, HEAD")], context: context)
        default:
            answer(head, .notFound, "layergated serves only /metrics here\n", context: context)
        }
    }

    /// The path of an origin-form (`/metrics?x`) or absolute-form (`http://host/metrics`) target.
    static func path(of uri: String) -> Substring {
        var rest = Substring(uri)
        if let scheme = rest.range(of: "://") {
            rest = rest[scheme.upperBound...]
            rest = rest.firstIndex(of: "/").map { rest[$0...] } ?? "/"
        }
        return rest.prefix { $0 != "?" && $0 != "#" }
    }

    private func answer(_ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ text: String,
                        extra: [(String, String)] = [], close: Bool = false, context: ChannelHandlerContext) {
        answer(head, status, Array(text.utf8), contentType: "text/plain; charset=utf-8", extra: extra, close: close,
               context: context)
    }

    private func answer(_ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ body: [UInt8], contentType: String,
                        extra: [(String, String)] = [], close: Bool = false, context: ChannelHandlerContext) {
        let keepAlive = head.isKeepAlive && !close
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.count)"),
                                   ("Connection", keepAlive ? "keep-alive" : "close")])
        headers.add(contentsOf: extra)
        answering = true
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            let (handler, context) = bound.value
            handler.answered(keepAlive: keepAlive, context: context)
        }
    }

    /// The answer reached the socket: close, answer the next request, or read on.
    private func answered(keepAlive: Bool, context: ChannelHandlerContext) {
        answering = false
        guard keepAlive else {
            context.close(promise: nil)
            return
        }
        guard waiting.isEmpty else {
            serveNext(context: context)
            return
        }
        connections.serving(connection, false)
        if readHeld {
            readHeld = false
            context.read()
        }
    }
}
