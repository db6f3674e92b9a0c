/// The inputs LayerGate reads from peers and disks, as fuzz targets: each
/// takes arbitrary bytes and must end in a value or an error, never a trap.
/// `layergate-fuzz` drives them under libFuzzer (`make fuzz`), and the test
/// suite replays the committed corpus (`Fuzz/corpus/<target>`) through them.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A request frame's payload as the server decodes it: the shape check,
    /// then the protobuf-c decode; a decoded request must survive a round trip.
    case request
    /// A response payload as the Swift client decodes it.
    case response
    /// A layer file, opened and read as a tenant's load and reads would.
    case layer
    /// A WAL segment, replayed as a tenant's load would.
    case wal

    /// Largest input worth trying (libFuzzer's -max_len).
    public var maxInputBytes: Int {
        switch self {
        case .request, .response: return 16 << 10
        case .layer, .wal: return 64 << 10
        }
    }

    public func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .request: WireTargets.request(bytes)
        case .response: WireTargets.response(bytes)
        case .layer: StorageTargets.layer(bytes)
        case .wal: StorageTargets.wal(bytes)
        }
    }
}
