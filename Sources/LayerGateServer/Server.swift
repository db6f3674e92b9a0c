#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Foundation
import LayerGateAuth
import LayerGateStorage
import LayerGateWire
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

/// Why the server would not start.
public enum ServerError: Error, CustomStringConvertible {
    /// A live server answers on the socket path already.
    case alreadyRunning(socket: String)
    case socket(String)

    public var description: String {
        switch self {
        case .alreadyRunning(let s): return "another layergated is serving on \(s); refusing to start"
        case .socket(let s): return s
        }
    }
}

/// layergated: the tenants, their storage and the Unix socket, as a service
/// whose graceful shutdown stops accepting, lets in-flight requests finish
/// (within `shutdownGrace`), closes the tenants and removes the socket file.
public final class Server: Service, Sendable {
    public let config: ServerConfig
    let logger: Logger
    let failpoints: Failpoints

    public init(config: ServerConfig, logger: Logger, failpoints: Failpoints = .shared) {
        self.config = config
        self.logger = logger
        self.failpoints = failpoints
    }

    public func run() async throws {
        if config.enableFailpoints { try failpoints.enable() }
        // The event loop first: it needs descriptors (epoll, eventfd, timerfd) that
        // loading many tenants could otherwise take, and it cannot start without them.
        let frontend = try Frontend(config.eventLoop, acceptBackoff: config.limits.acceptBackoff, busyPoll: config.busyPoll,
                                     kernelReads: config.makesKernelReads, logger: logger)
        // /metrics gets its own thread: scrapes, wanted or not, never queue behind GetPage or ahead of it.
        let metricsGroup = config.metricsListen.map { _ in MultiThreadedEventLoopGroup(numberOfThreads: 1) }
        let cache = PageCache(capacity: max(1, config.pageCacheMiB * 128))
        // Metrics cost nothing unless exported: without --metrics-listen they go to swift-metrics' no-op handlers.
        let registry = config.metricsListen.map { _ in PrometheusCollectorRegistry() }
        let factory: any MetricsFactory = registry.map {
            DocumentedMetricsFactory(registry: $0, descriptions: Self.metricDescriptions)
        } ?? NOOPMetricsHandler.instance
        let manager: TenantManager
        let tenants: [TenantId]
        do {
            let remote = try config.remoteStorage.map { url throws(RemoteError) in
                try RemoteStoreURL.open(url, endpoint: config.s3Endpoint, region: config.s3Region,
                                        environment: ProcessInfo.processInfo.environment)
            }
            if let remote { logger.info("remote storage", metadata: ["store": "\(remote.description)"]) }
            manager = try TenantManager(dataDirectory: config.dataDirectory, config: config.tenant, cache: cache,
                                        failpoints: failpoints, metrics: StorageMetrics(factory: factory), remote: remote,
                                        logger: logger)
            tenants = try await manager.loadAll()
        } catch {
            await frontend.shutdown()
            try? await metricsGroup?.shutdownGracefully()
            throw error
        }
        let verifier: TokenVerifier?
        let tracker = InFlightTracker()
        let budgets = InflightBudgets(capacity: config.limits.maxInflightBytes)
        let dispatcher: Dispatcher
        var metricsChannel: (any Channel)?
        do {
            verifier = try await config.authPublicKeyPEM.asyncMap { pem in
                do { return try await TokenVerifier(publicKeyPEM: pem) } catch {
                    throw ServerError.socket("--auth-public-key: not an Ed25519 public key in PEM (\(error))")
                }
            }
            dispatcher = Dispatcher(manager: manager, config: config, failpoints: failpoints, verifier: verifier,
                                    metrics: RequestMetrics(factory: factory), logger: logger)
            if let address = config.metricsListen, let registry, let metricsGroup {
                let collector = ScrapeCollector(
                    manager: manager, factory: factory,
                    connections: { dispatcher.connectionCount.load(ordering: .relaxed) }, inFlight: { tracker.current },
                    loopReadSubmissions: { frontend.kernelReadSubmissions })
                do {
                    metricsChannel = try await MetricsEndpoint.bind(address, group: metricsGroup, registry: registry,
                                                                    collector: collector,
                                                                    maxConnections: config.limits.maxMetricsConnections,
                                                                    logger: logger)
                } catch let e as IOError {
                    throw ServerError.socket("--metrics-listen \(address): \(String(cString: strerror(e.errnoCode)))")
                } catch {
                    throw ServerError.socket("--metrics-listen \(address): \(error)")
                }
            }
            try await serve(frontend, dispatcher: dispatcher, tracker: tracker, budgets: budgets)
        } catch {
            try? await metricsChannel?.close()
            await manager.shutdown()
            await frontend.shutdown()
            try? await metricsGroup?.shutdownGracefully()
            throw error
        }
        logger.info("layergated \(ServerConfig.version) serving", metadata: [
            "socket": "\(config.socketPath)", "data_dir": "\(config.dataDirectory)",
            "tenants": "\(tenants.count)", "page_cache_pages": "\(cache.capacity)",
            "failpoints": "\(config.enableFailpoints ? "enabled" : "off")",
            "auth": "\(verifier == nil ? "off (SO_PEERCRED)" : "tokens (EdDSA)")",
            "max_connections": "\(config.limits.maxConnections)",
            "reserved_connections": "\(config.limits.keptForServerUser)",
            "event_loop": "\(config.eventLoop.rawValue)",
            // Misses on the loop's io_uring as configured; a kernel without it said so above ("no io_uring").
            "layer_reads": "\(config.tenant.directLayerReads ? "direct" : "buffered")",
            "miss_reads": "\(config.makesKernelReads ? "io_uring" : "read threads")",
            "metrics": "\(metricsChannel?.localAddress.map { "http://\(Self.hostPort($0))/metrics" } ?? "off")",
        ])
        // Serve until asked to stop (SIGTERM/SIGINT through the service group).
        try? await gracefulShutdown()
        // 1. No new connections. 2. Every reader waiting for an LSN is answered
        // now. 3. What runs may finish (bounded). 4. The tenants close. 5. Only
        // then the event loop goes, so no answer is scheduled on a dead loop.
        logger.info("shutting down: no new connections or requests, answering waiting reads, finishing in-flight requests")
        await frontend.stopAccepting()
        try? await metricsChannel?.close()
        manager.failWaiters(reason: "stopping (the server is shutting down)")
        // Open connections stop taking requests, or under steady load the count in flight
        // only touched zero now and then, and the connections closed with requests running.
        let connectionsClose = await frontend.endInput()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                guard connectionsClose else { return await tracker.drained() }
                // Each closes once its answers are out: wait for the last (their count has no waiters).
                while dispatcher.connectionCount.load(ordering: .relaxed) > 0 || tracker.current > 0, !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            group.addTask { try? await Task.sleep(for: self.config.shutdownGrace) }
            await group.next()
            group.cancelAll()
        }
        if tracker.current > 0 { logger.warning("stopping with \(tracker.current) requests still running") }
        let open = dispatcher.connectionCount.load(ordering: .relaxed)
        if connectionsClose && open > 0 {
            logger.warning("stopping with \(open) connections still open: their peers did not read their answers within the grace")
        }
        await manager.shutdown()
        await frontend.shutdown()
        try? await metricsGroup?.shutdownGracefully()
        unlink(config.socketPath)
        logger.info("stopped")
    }

    /// Listens on the socket path and serves its connections on `frontend`.
    private func serve(_ frontend: Frontend, dispatcher: Dispatcher, tracker: InFlightTracker,
                       budgets: InflightBudgets) async throws {
        let path = config.socketPath
        if let dir = path.range(of: "/", options: .backwards).map({ String(path[..<$0.lowerBound]) }), !dir.isEmpty {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        if Self.someoneListens(on: path) { throw ServerError.alreadyRunning(socket: path) }
        let settings = ConnectionSettings(dispatcher: dispatcher, limits: config.limits, maxFrameBytes: config.maxFrameBytes,
                                          budgets: budgets, tracker: tracker, logger: logger)
        let listener = try UnixListener.listen(path: path, mode: config.socketMode)
        switch frontend {
        case .epoll(let server):
            server.serve(listener, settings: settings)
        case .nio(let group, let channel):
            do {
                channel.value = try await bind(listener, group: group, settings: settings)
            } catch {
                unlink(path)  // no socket file is left that nothing serves
                throw error
            }
        }
    }

    /// Serves `listener` on SwiftNIO (`--event-loop nio`).
    private func bind(_ listener: Int32, group: MultiThreadedEventLoopGroup, settings: ConnectionSettings) async throws -> Channel {
        let backoff = TimeAmount(settings.limits.acceptBackoff)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelInitializer { channel in
                // Out of descriptors at accept: pause accepting instead of spinning on EMFILE.
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler(backoffProvider: { _ in backoff }))
                }
            }
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 64 << 10))
            .childChannelOption(.autoRead, value: true)
            .childChannelOption(.allowRemoteHalfClosure, value: true)  // a peer that shut its sending side still gets its answers
            .childChannelInitializer { channel in
                guard let provider = channel as? SocketOptionProvider else {
                    return channel.eventLoop.makeFailedFuture(ServerError.socket("no socket options on \(channel)"))
                }
                let cred: EventLoopFuture<lg_peer_credentials> = provider.unsafeGetSocketOption(
                    level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(lg_so_peercred()))
                return cred.flatMapThrowing { c in
                    let peer = PeerIdentity(uid: c.uid, pid: c.pid)
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(settings, peer: peer))
                }
            }
        return try await bootstrap.withBoundSocket(listener).get()
    }

    /// Every metric the server exports, with its help text and buckets.
    static let metricDescriptions = StorageMetrics.descriptions + RequestMetrics.descriptions + ScrapeCollector.descriptions

    static func hostPort(_ a: SocketAddress) -> String {
        let ip = a.ipAddress ?? "?"
        return (a.protocol == .inet6 ? "[\(ip)]" : ip) + ":\(a.port ?? 0)"
    }

    /// True when a live server accepts connections on `path` (a stale file does not).
    static func someoneListens(on path: String) -> Bool {
        guard access(path, F_OK) == 0, var addr = UnixListener.address(path) else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return ok == 0
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async throws -> T? {
        guard let v = self else { return nil }
        return try await transform(v)
    }
}
