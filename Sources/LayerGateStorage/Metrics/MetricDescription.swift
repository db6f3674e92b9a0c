import Metrics

/// A metric's name, what it means and, for a histogram, its buckets: what an
/// exporter needs beyond swift-metrics' label, so that a scrape explains itself.
public struct MetricDescription: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case counter
        case gauge
        /// Durations, in seconds; bucket bounds in seconds.
        case durationHistogram(buckets: [Double])
        /// Plain values (sizes, counts); bucket bounds in the same unit.
        case valueHistogram(buckets: [Double])
    }

    public var name: String
    public var help: String
    public var kind: Kind

    public init(_ name: String, _ kind: Kind, _ help: String) {
        (self.name, self.kind, self.help) = (name, kind, help)
    }

    /// Bucket bounds from `first`, each `factor` times the one before, up to `last`.
    public static func exponentialBuckets(from first: Double, factor: Double, upTo last: Double) -> [Double] {
        precondition(first > 0 && factor > 1)
        return Array(sequence(first: first) { $0 * factor }.prefix { $0 <= last * 1.0001 })
    }
}

/// The swift-metrics handler of a description, made once by its owner: the
/// one way LayerGate's code turns a name into something it counts with.
extension MetricDescription {
    public func counter(_ factory: any MetricsFactory, _ dimensions: [(String, String)] = []) -> Counter {
        Counter(label: name, dimensions: dimensions, factory: factory)
    }

    public func gauge(_ factory: any MetricsFactory, _ dimensions: [(String, String)] = []) -> Gauge {
        Gauge(label: name, dimensions: dimensions, factory: factory)
    }

    public func timer(_ factory: any MetricsFactory, _ dimensions: [(String, String)] = []) -> Timer {
        Timer(label: name, dimensions: dimensions, factory: factory)
    }

    /// For a `.valueHistogram`.
    public func histogram(_ factory: any MetricsFactory, _ dimensions: [(String, String)] = []) -> Recorder {
        Recorder(label: name, dimensions: dimensions, aggregate: true, factory: factory)
    }
}
