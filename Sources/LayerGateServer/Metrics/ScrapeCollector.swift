import LayerGateStorage
import Metrics
import Synchronization

/// What a scrape reads from the server's own state instead of counting as it
/// happens: the page cache (its counters already exist, for ServerStatus),
/// connections and requests in flight, and each tenant's LSNs and layers.
/// So the hot paths pay nothing for these.
final class ScrapeCollector: Sendable {
    private let manager: TenantManager
    private let connections: @Sendable () -> Int
    private let inFlight: @Sendable () -> Int
    private let loopReadSubmissions: @Sendable () -> Int
    private let factory: any MetricsFactory
    private let cacheHits, cacheMisses, cacheEvictions, cacheOsLoads, cacheLoopReads, loopSubmissions, directFallbacks: Counter
    private let cacheCapacity, cacheUsed, connectionsGauge, inFlightGauge, tenantCount: Metrics.Gauge
    private let state = Mutex(State())

    private struct State {
        /// The cache's totals at the last scrape: its counters move by the difference.
        var seenHits: UInt64 = 0
        var seenMisses: UInt64 = 0
        var seenEvictions: UInt64 = 0
        var seenOsLoads: UInt64 = 0
        var seenLoopReads: UInt64 = 0
        var seenFallbacks = 0
        var seenSubmissions = 0
        var tenants: [TenantId: TenantGauges] = [:]
    }

    private struct TenantGauges {
        var lastRecordLsn, diskConsistentLsn, layers, layerBytes: Metrics.Gauge

        init(_ id: TenantId, factory: any MetricsFactory) {
            let d = [("tenant", id.description)]
            lastRecordLsn = ScrapeCollector.tenantLastRecordLsn.gauge(factory, d)
            diskConsistentLsn = ScrapeCollector.tenantDiskConsistentLsn.gauge(factory, d)
            layers = ScrapeCollector.tenantLayers.gauge(factory, d)
            layerBytes = ScrapeCollector.tenantLayerBytes.gauge(factory, d)
        }

        func destroy() { for g in [lastRecordLsn, diskConsistentLsn, layers, layerBytes] { g.destroy() } }
    }

    init(manager: TenantManager, factory: any MetricsFactory, connections: @escaping @Sendable () -> Int,
         inFlight: @escaping @Sendable () -> Int, loopReadSubmissions: @escaping @Sendable () -> Int) {
        self.manager = manager
        self.factory = factory
        self.connections = connections
        self.inFlight = inFlight
        self.loopReadSubmissions = loopReadSubmissions
        cacheHits = Self.cacheHitsTotal.counter(factory)
        cacheMisses = Self.cacheMissesTotal.counter(factory)
        cacheEvictions = Self.cacheEvictionsTotal.counter(factory)
        cacheOsLoads = Self.cacheOsLoadsTotal.counter(factory)
        cacheLoopReads = Self.cacheLoopReadsTotal.counter(factory)
        loopSubmissions = Self.loopReadSubmissionsTotal.counter(factory)
        directFallbacks = Self.directReadFallbacksTotal.counter(factory)
        cacheCapacity = Self.cacheCapacityBytes.gauge(factory)
        cacheUsed = Self.cacheUsedBytes.gauge(factory)
        connectionsGauge = Self.connectionsOpen.gauge(factory)
        inFlightGauge = Self.requestsInFlight.gauge(factory)
        tenantCount = Self.tenantsLoaded.gauge(factory)
    }

    /// Brings every value this collector owns up to now; call before emitting.
    func collect() {
        let cache = manager.cache.stats
        let fallbacks = manager.storage.openFiles.stats.fallbacks
        let submissions = loopReadSubmissions()
        let tenants = manager.tenantIds.compactMap { try? manager.tenant($0).status() }
        state.withLock { s in
            cacheHits.increment(by: Int64(clamping: cache.hits &- s.seenHits))
            cacheMisses.increment(by: Int64(clamping: cache.misses &- s.seenMisses))
            cacheEvictions.increment(by: Int64(clamping: cache.evictions &- s.seenEvictions))
            cacheOsLoads.increment(by: Int64(clamping: cache.fromOsCache &- s.seenOsLoads))
            cacheLoopReads.increment(by: Int64(clamping: cache.byLoopReads &- s.seenLoopReads))
            (s.seenHits, s.seenMisses, s.seenEvictions, s.seenOsLoads) = (cache.hits, cache.misses, cache.evictions, cache.fromOsCache)
            s.seenLoopReads = cache.byLoopReads
            loopSubmissions.increment(by: Int64(submissions - s.seenSubmissions))
            s.seenSubmissions = submissions
            directFallbacks.increment(by: Int64(fallbacks - s.seenFallbacks))
            s.seenFallbacks = fallbacks
            cacheCapacity.record(cache.capacity * PageCache.blockSize)
            cacheUsed.record(cache.used * PageCache.blockSize)
            connectionsGauge.record(connections())
            inFlightGauge.record(inFlight())
            tenantCount.record(tenants.count)
            var gone = s.tenants
            for t in tenants {
                let g = s.tenants[t.tenantId] ?? TenantGauges(t.tenantId, factory: factory)
                s.tenants[t.tenantId] = g
                gone[t.tenantId] = nil
                // LSNs pass 2^53 only after 8 PiB of WAL: a float64 holds them exactly until then.
                g.lastRecordLsn.record(Double(t.lastRecordLsn.rawValue))
                g.diskConsistentLsn.record(Double(t.diskConsistentLsn.rawValue))
                g.layers.record(t.layers.count)
                g.layerBytes.record(t.layers.reduce(0) { $0 + $1.size })
            }
            for (id, g) in gone {
                g.destroy()
                s.tenants[id] = nil
            }
        }
    }

    static let cacheHitsTotal = MetricDescription(
        "layergate_page_cache_hits_total", .counter, "Page cache lookups that found the block.")
    static let cacheMissesTotal = MetricDescription(
        "layergate_page_cache_misses_total", .counter, "Page cache lookups that did not (the block was read from its layer file).")
    static let cacheOsLoadsTotal = MetricDescription(
        "layergate_page_cache_os_loads_total", .counter,
        "Misses the event loop filled from the OS page cache itself, without a read thread (a part of the misses).")
    static let cacheLoopReadsTotal = MetricDescription(
        "layergate_page_cache_loop_reads_total", .counter,
        "Misses the event loop read from the disk itself (io_uring, --miss-reads uring), without a read thread (a part of the misses).")
    static let loopReadSubmissionsTotal = MetricDescription(
        "layergate_loop_read_submissions_total", .counter,
        "Times the event loop handed the disk reads it queued in one pass to the kernel: one io_uring_enter and one notification of the disk each.")
    static let directReadFallbacksTotal = MetricDescription(
        "layergate_layer_direct_read_fallbacks_total", .counter,
        "Layer files whose direct reads (--layer-reads direct) the filesystem refused: they are read through the OS page cache.")
    static let cacheEvictionsTotal = MetricDescription(
        "layergate_page_cache_evictions_total", .counter, "Blocks evicted from the page cache to make room.")
    static let cacheCapacityBytes = MetricDescription(
        "layergate_page_cache_capacity_bytes", .gauge, "Size of the page cache (--page-cache-mib).")
    static let cacheUsedBytes = MetricDescription(
        "layergate_page_cache_used_bytes", .gauge, "Bytes of the page cache holding blocks.")
    static let connectionsOpen = MetricDescription(
        "layergate_connections", .gauge, "Client connections open on the Unix socket.")
    static let requestsInFlight = MetricDescription(
        "layergate_requests_in_flight", .gauge, "Requests being served off the event loop (disk reads, waits, puts, admin).")
    static let tenantsLoaded = MetricDescription(
        "layergate_tenants", .gauge, "Tenants this server holds, in any state.")
    static let tenantLastRecordLsn = MetricDescription(
        "layergate_tenant_last_record_lsn", .gauge, "The newest LSN a tenant stored (durable in its WAL).")
    static let tenantDiskConsistentLsn = MetricDescription(
        "layergate_tenant_disk_consistent_lsn", .gauge, "The LSN up to which a tenant's records are in listed layer files.")
    static let tenantLayers = MetricDescription(
        "layergate_tenant_layers", .gauge, "Layer files listed in a tenant's index.")
    static let tenantLayerBytes = MetricDescription(
        "layergate_tenant_layer_bytes", .gauge, "Bytes of the layer files listed in a tenant's index.")

    static let descriptions = [
        cacheHitsTotal, cacheMissesTotal, cacheOsLoadsTotal, cacheLoopReadsTotal, loopReadSubmissionsTotal, directReadFallbacksTotal, cacheEvictionsTotal, cacheCapacityBytes, cacheUsedBytes, connectionsOpen,
        requestsInFlight, tenantsLoaded, tenantLastRecordLsn, tenantDiskConsistentLsn, tenantLayers, tenantLayerBytes,
    ]
}
