import LayerGateStorage

/// Everything `layergated` is configured with; the defaults are DESIGN.md's.
public struct ServerConfig: Sendable {
    public var socketPath = "./.layergate/layergate.sock"
    /// Permission bits of the socket file (0o600: only this uid may connect).
    public var socketMode: UInt16 = 0o600
    public var dataDirectory = "./.layergate/data"
    public var pageCacheMiB = 128
    public var tenant = TenantConfig()
    public var maxFrameBytes = 16 << 20
    public var enableFailpoints = false
    /// Requests one connection may have in flight before the server stops reading from it.
    public var maxInFlightPerConnection = 128
    /// How long a graceful shutdown waits for in-flight requests.
    public var shutdownGrace: Duration = .seconds(10)

    public init() {}

    public static let version = "0.1.0"
}
