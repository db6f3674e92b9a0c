/// How the process's descriptor table is shared out at start. A process that
/// runs out of descriptors fails where it cannot recover (accepts pause, a
/// layer file cannot be opened and every read of it is refused), so each
/// user of descriptors gets a share it stays within, and the shares are cut
/// from what is left after everything the server holds for itself:
/// - `held`: open when the plan is made (standard streams, whatever the
///   parent passed down), counted, not assumed;
/// - `own`: what the server opens for itself afterwards and keeps (its event
///   loops, signal handlers, listening sockets, the data directory and its
///   lock, the io_uring), counted for an idle server by a test;
/// - `spare`: kept for the short-lived ones (a flush's or a compaction's
///   files, an index being written).
/// Then, when configured, remote-store calls in flight (each up to three: the
/// store's directory or a socket, the object, a local file) and metrics
/// connections (one more for the one accepted only to be closed). Of what is
/// left: a quarter for layer files (their slots, and the rest of the quarter
/// for reads' own descriptors while the slots are busy), a quarter for open
/// tenants, half for connections.
public struct DescriptorPlan: Equatable, Sendable {
    public var openLayerFiles: Int
    public var looseLayerFiles: Int
    public var tenantDescriptors: Int
    public var connections: Int
    /// Remote-store calls at once (0: no remote storage).
    public var remoteCalls: Int
    /// Metrics connections held at once (0: no metrics endpoint).
    public var metricsConnections: Int
    public let own: Int
    public let spare: Int
    /// What is left for the shares; below `minimumUsable` the server cannot
    /// serve one connection of one tenant and refuses to start.
    public let usable: Int

    public static let descriptorsPerRemoteCall = 3
    /// One connection; a layer file, a read's own and an evicted one's; one tenant.
    public static let minimumUsable = 1 + 3 + 3

    /// Descriptors the server keeps for itself after the plan is made,
    /// as counted in an idle server by `DescriptorPlanTests`: the data
    /// directory (two), its lock and its `tenants` directory, the socket
    /// listened on, a pipe and /dev/null of the runtime's, and the loop
    /// serving connections (the epoll loop's epoll and eventfd, or a
    /// SwiftNIO loop's epoll, eventfd and timerfd); the io_uring and its
    /// eventfd; the metrics' SwiftNIO loop and listening socket. Two more
    /// for what the runtimes open lazily, early or late (libdispatch's
    /// timerfds, a SwiftNIO loop's that starts as the plan is made): the
    /// count at the plan saw one of them or not, run to run.
    public static func own(config: ServerConfig) -> Int {
        var n = config.eventLoop == .nio ? 12 : 11
        if config.makesKernelReads { n += 2 }
        if config.metricsListen != nil { n += 4 }
        return n
    }

    public init(limit: Int, held: Int, config: ServerConfig) {
        own = Self.own(config: config)
        spare = min(64, max(4, limit / 16))
        var rest = max(0, limit - held - own - spare)
        remoteCalls = config.remoteStorage == nil ? 0 : min(64, max(1, rest / 16))
        metricsConnections = config.metricsListen == nil ? 0 : min(64, max(2, rest / 16))
        rest = max(0, rest - remoteCalls * Self.descriptorsPerRemoteCall - (metricsConnections > 0 ? metricsConnections + 1 : 0))
        usable = rest
        let layerShare = max(3, rest / 4)
        // A slot per layer file the server wants open, but at least two
        // descriptors of the share kept outside the slots: the table splits
        // them between reads while every slot is busy and evicted files
        // that a reader still holds (`OpenFileTable`).
        openLayerFiles = max(1, min(config.tenant.maxOpenLayerFiles, layerShare - max(2, layerShare / 4)))
        looseLayerFiles = max(2, layerShare - openLayerFiles)
        tenantDescriptors = rest / 4
        connections = min(config.limits.maxConnections, max(1, rest - layerShare - tenantDescriptors))
    }

    /// Too little is left beside what the server holds to serve anything.
    public var isTooSmall: Bool { usable < Self.minimumUsable }

    /// Whether the plan cut anything the configuration asked for.
    public func lowers(_ config: ServerConfig) -> Bool {
        openLayerFiles < config.tenant.maxOpenLayerFiles || connections < config.limits.maxConnections
    }

    public func apply(to config: inout ServerConfig) {
        config.tenant.maxOpenLayerFiles = openLayerFiles
        config.tenant.maxLooseLayerFiles = looseLayerFiles
        config.tenant.maxTenantDescriptors = tenantDescriptors
        config.limits.maxConnections = connections
        config.tenant.maxRemoteCalls = remoteCalls > 0 ? remoteCalls : nil
        if metricsConnections > 0 { config.limits.maxMetricsConnections = metricsConnections }
    }
}
