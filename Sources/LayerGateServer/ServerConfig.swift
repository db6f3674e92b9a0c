import LayerGateStorage
import LayerGateWire

/// Everything `layergated` is configured with; the defaults are the contract's.
public struct ServerConfig: Sendable {
    public var socketPath = Defaults.socketPath
    /// Permission bits of the socket file (0o600: only this uid may connect).
    public var socketMode: UInt16 = 0o600
    public var dataDirectory = Defaults.dataDirectory
    public var pageCacheMiB = 128
    public var tenant = TenantConfig()
    public var maxFrameBytes = 16 << 20
    public var enableFailpoints = false
    public var limits = ServerLimits()
    /// An Ed25519 public key (PEM): when set, every request needs a token.
    public var authPublicKeyPEM: String?
    /// Where `/metrics` (Prometheus) is served; nil: not at all.
    public var metricsListen: MetricsAddress?
    /// Where layers are copied beyond the data directory (`file:///DIR`); nil: nowhere.
    public var remoteStorage: String?
    /// For s3:// remote storage: the endpoint (nil: AWS's for the region) and the region.
    public var s3Endpoint: String?
    public var s3Region = "us-east-1"
    /// What serves the Unix socket's connections.
    public var eventLoop: EventLoopKind = .epoll
    /// How long the epoll loop keeps polling, without sleeping, after its last
    /// event (zero: it sleeps at once). A request that comes within it is
    /// taken without the wake-up of a sleeping thread, at the price of a core
    /// kept busy that long after each one.
    public var busyPoll: Duration = .zero
    /// The epoll loop reads GetPage misses of direct layer reads itself,
    /// through io_uring (where the kernel allows it); false, or buffered layer
    /// reads: read threads do, handed each miss and back.
    public var kernelReads = true

    /// Whether the epoll loop makes its io_uring: only direct layer reads use
    /// it (with buffered ones it would hold two descriptors for nothing).
    public var makesKernelReads: Bool { kernelReads && tenant.directLayerReads && eventLoop == .epoll }
    /// How long a graceful shutdown waits for in-flight requests.
    public var shutdownGrace: Duration = .seconds(8)

    public init() {}

    public static let version = "0.2.0"
}

/// What serves the Unix socket's connections: the server's own epoll loop
/// (the default, and the faster), or a SwiftNIO event loop (kept to compare
/// against, and under the in-process tests). Both run the same `Connection`.
public enum EventLoopKind: String, Sendable, CaseIterable {
    case epoll
    case nio
}

/// What one peer, or all of them together, may hold of the server: memory,
/// descriptors and time. Server memory stays bounded by these whatever
/// clients send: about `perConnectionBytes` per connection, plus
/// `maxInflightBytes` for large requests, plus the tenants' own memory.
public struct ServerLimits: Sendable {
    /// Connections beyond this get RESOURCE_EXHAUSTED (request id 0) and a close.
    public var maxConnections = 1024
    /// Of `maxConnections`, kept for the server's uid and root (its ingester,
    /// operators): other peers are refused before they take these, so readers
    /// that fill the table never lock out writes and admin requests. At most
    /// half of `maxConnections`, which the descriptor plan may have lowered.
    public var reservedConnections = 8
    /// `reservedConnections` as it applies: at most half of `maxConnections`.
    public var keptForServerUser: Int { min(reservedConnections, maxConnections / 2) }
    /// Connections a peer other than the server's uid and root may be one of.
    public var connectionsForOtherPeers: Int { maxConnections - keptForServerUser }
    /// Metrics (HTTP) connections held at once; a new one past it closes the
    /// one idle longest (`MetricsEndpoint`).
    public var maxMetricsConnections = 64
    /// Requests one connection may have running; it is not read meanwhile.
    public var maxInFlightPerConnection = 32
    /// Frames up to this size are read and decoded on the event loop at once;
    /// larger ones first reserve their size from `maxInflightBytes` and are
    /// decoded off the event loop, so no GetPage waits behind them.
    public var smallFrameBytes = 64 << 10
    /// Large request bytes being received, decoded or served, across all
    /// connections; past it those connections are not read until it drains.
    public var maxInflightBytes = 256 << 20
    /// Records, patches and other sub-messages one request may hold: a frame
    /// of millions of empty records is refused before anything is built.
    public var maxMessagesPerRequest = 262_144
    /// A GetPage's `wait_ms` is capped to this.
    public var maxWaitLsn: Duration = .seconds(60)
    /// A frame must arrive within this, plus one second per MiB of its size,
    /// from its first byte (slow peers are dropped).
    public var frameTimeout: Duration = .seconds(10)
    /// A connection with nothing running and nothing arriving for this long is closed.
    public var idleTimeout: Duration = .seconds(600)
    /// How long accept pauses after the process ran out of descriptors.
    public var acceptBackoff: Duration = .milliseconds(250)

    public init() {}

    /// What one connection can hold at most: its read buffer, its unread
    /// responses (the write buffer's high water mark plus one per request running).
    public var perConnectionBytes: Int { smallFrameBytes * 4 + 64 << 10 + maxInFlightPerConnection * (8 << 10 + 64) }
}
