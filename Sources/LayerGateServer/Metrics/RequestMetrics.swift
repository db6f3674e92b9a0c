import LayerGateStorage
import LayerGateWire
import Metrics
import NIOCore
import Synchronization

/// Requests by type and result, and their latency by type. The handlers of
/// answered-OK requests are made up front, so the GetPage hot path only adds
/// to an atomic and a histogram; an error's counter is made on first use.
public final class RequestMetrics: Sendable {
    /// The `type` label: the request's body.
    enum Kind: Int, CaseIterable {
        case getPage, putRecords, compact, resetTenant, createTenant, tenantStatus, listTenants, serverStatus
        case configureFailpoints, attachTenant, detachTenant
        /// A frame that is not a request (undecodable, empty, too large, no body).
        case invalid

        init(_ body: Wire.Request.Body?) {
            switch body {
            case .getPage?: self = .getPage
            case .putRecords?: self = .putRecords
            case .compact?: self = .compact
            case .resetTenant?: self = .resetTenant
            case .createTenant?: self = .createTenant
            case .tenantStatus?: self = .tenantStatus
            case .listTenants?: self = .listTenants
            case .serverStatus?: self = .serverStatus
            case .configureFailpoints?: self = .configureFailpoints
            case .attachTenant?: self = .attachTenant
            case .detachTenant?: self = .detachTenant
            case nil: self = .invalid
            }
        }

        var label: String {
            switch self {
            case .getPage: return "get_page"
            case .putRecords: return "put_records"
            case .compact: return "compact"
            case .resetTenant: return "reset_tenant"
            case .createTenant: return "create_tenant"
            case .tenantStatus: return "tenant_status"
            case .listTenants: return "list_tenants"
            case .serverStatus: return "server_status"
            case .configureFailpoints: return "configure_failpoints"
            case .attachTenant: return "attach_tenant"
            case .detachTenant: return "detach_tenant"
            case .invalid: return "invalid"
            }
        }
    }

    private let factory: any MetricsFactory
    /// By `Kind.rawValue`; none for `.invalid`, which is never answered OK.
    private let answered: [Counter?]
    private let latency: [Timer]
    private let failed = Mutex<[ErrorKey: Counter]>([:])
    /// GetPage's OK counter and timer, also held here: reading an array's
    /// element costs a retain and a release, on every cached GetPage.
    private let getPageAnswered: Counter
    private let getPageLatency: Timer

    private struct ErrorKey: Hashable {
        var kind: Int
        var code: Int32
    }

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        answered = Kind.allCases.map {
            $0 == .invalid ? nil
                : Self.requestsTotal.counter(factory, [("type", $0.label), ("result", "ok")])
        }
        latency = Kind.allCases.map {
            Self.requestDurationSeconds.timer(factory, [("type", $0.label)])
        }
        getPageAnswered = answered[Kind.getPage.rawValue]!
        getPageLatency = latency[Kind.getPage.rawValue]
    }

    /// `count` GetPages answered OK since `start`, with one clock reading:
    /// the event loop's cache hits, tallied once per pass over a connection's bytes.
    func answeredGetPages(_ count: Int, since start: NIODeadline) {
        let nanoseconds = (NIODeadline.now() - start).nanoseconds
        for _ in 0..<count { getPageLatency.recordNanoseconds(nanoseconds) }
        getPageAnswered.increment(by: Int64(count))
    }

    /// Counts one answered request, OK when `error` is nil, and its time since `start`.
    /// `start` is a monotonic reading (`NIODeadline`, CLOCK_MONOTONIC): a
    /// cached GetPage takes about a microsecond, and `ContinuousClock` with its
    /// `Duration` arithmetic cost a few percent of it.
    func finished(_ kind: Kind, error: Wire.ErrorCode?, since start: NIODeadline) {
        latency[kind.rawValue].recordNanoseconds((NIODeadline.now() - start).nanoseconds)
        guard let error else {
            answered[kind.rawValue]?.increment()
            return
        }
        let key = ErrorKey(kind: kind.rawValue, code: error.rawValue)
        let counter = failed.withLock { made in
            if let c = made[key] { return c }
            let c = Self.requestsTotal.counter(factory, [("type", kind.label), ("result", error.metricLabel)])
            made[key] = c
            return c
        }
        counter.increment()
    }

    func finished(_ kind: Kind, _ body: Wire.Response.Body, since start: NIODeadline) {
        if case .error(let e) = body { finished(kind, error: e.code, since: start) } else { finished(kind, error: nil, since: start) }
    }

    static let requestsTotal = MetricDescription(
        "layergate_requests_total", .counter,
        "Requests answered, by type and result (ok, or the error code answered, in lower case).")
    static let requestDurationSeconds = MetricDescription(
        "layergate_request_duration_seconds",
        .durationHistogram(buckets: [25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 50e-3, 0.25, 1, 5, 30]),
        "Time from a request's dispatch to its answer, by type (a GetPage's includes its wait for the LSN).")

    public static let descriptions = [requestsTotal, requestDurationSeconds]
}

extension Wire.ErrorCode {
    /// The `result` label of an error: its proto name in lower case.
    var metricLabel: String {
        if case .unknown = self { return "unknown" }
        return name.lowercased()
    }
}
