/// Round-trip times, sorted once, and their percentiles: the one definition
/// the benchmarks (`layergate bench`, `layergate-storage-bench`) and the
/// latency checks of the tests share.
public struct LatencySamples: Sendable {
    public let sorted: [Duration]

    public init(_ samples: [Duration]) { sorted = samples.sorted() }

    public var count: Int { sorted.count }

    /// The sample below which a fraction `q` (0…1) of them lie; nil when there are none.
    public func percentile(_ q: Double) -> Duration? {
        guard !sorted.isEmpty else { return nil }
        return sorted[min(sorted.count - 1, max(0, Int(Double(sorted.count) * q)))]
    }

    /// `percentile(q)` in microseconds (0 when there are no samples).
    public func microseconds(_ q: Double) -> Double { (percentile(q) ?? .zero).seconds * 1e6 }
}

extension Duration {
    /// In seconds, as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
