import Metrics

/// What the storage engine counts as it works: ingest, WAL fsyncs, flushes,
/// compaction and GC. Made once per `TenantManager` from the factory it is
/// given (swift-metrics' no-op one unless the server exports metrics), so the
/// hot paths hold ready handlers and never look a metric up by name.
public final class StorageMetrics: Sendable {
    let ingestBytes: Counter
    let ingestRecords: Counter
    let walFsync: Timer
    let groupCommitPuts: Recorder
    let flushes: Counter
    let flushFailures: Counter
    let flushDuration: Timer
    let flushBytes: Counter
    let compactionRuns: Counter
    let compactionFailures: Counter
    let compactionDuration: Timer
    let compactionBytes: Counter
    let gcLayersRemoved: Counter
    let layerDownloads: Counter
    let layerDownloadBytes: Counter
    let layerDownloadDuration: Timer
    let layerEvictions: Counter
    let localLayerBytes: Gauge

    /// Counts nothing: for pieces used outside a `TenantManager` (tools, tests, fuzzing).
    static let unexported = StorageMetrics(factory: NOOPMetricsHandler.instance)

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        ingestBytes = Self.ingestBytesTotal.counter(factory)
        ingestRecords = Self.ingestRecordsTotal.counter(factory)
        walFsync = Self.walFsyncSeconds.timer(factory)
        groupCommitPuts = Self.groupCommitPutsName.histogram(factory)
        flushes = Self.flushesTotal.counter(factory)
        flushFailures = Self.flushFailuresTotal.counter(factory)
        flushDuration = Self.flushDurationSeconds.timer(factory)
        flushBytes = Self.flushWrittenBytesTotal.counter(factory)
        compactionRuns = Self.compactionRunsTotal.counter(factory)
        compactionFailures = Self.compactionFailuresTotal.counter(factory)
        compactionDuration = Self.compactionDurationSeconds.timer(factory)
        compactionBytes = Self.compactionWrittenBytesTotal.counter(factory)
        gcLayersRemoved = Self.gcLayersRemovedTotal.counter(factory)
        layerDownloads = Self.layerDownloadsTotal.counter(factory)
        layerDownloadBytes = Self.layerDownloadBytesTotal.counter(factory)
        layerDownloadDuration = Self.layerDownloadSeconds.timer(factory)
        layerEvictions = Self.layerEvictionsTotal.counter(factory)
        localLayerBytes = Self.localLayerBytesName.gauge(factory)
    }

    func ingested(puts: Int, records: Int, bytes: Int) {
        groupCommitPuts.record(puts)
        ingestRecords.increment(by: records)
        ingestBytes.increment(by: bytes)
    }

    /// A flush ended; `bytes`: the size of the L0 file it listed (0 when it failed).
    func flushed(after start: ContinuousClock.Instant, failed: Bool, bytes: Int = 0) {
        flushDuration.record(duration: .now - start)
        (failed ? flushFailures : flushes).increment()
        if bytes > 0 { flushBytes.increment(by: bytes) }
    }

    /// A compaction run ended, however it ended.
    func compactionRan(since start: ContinuousClock.Instant) {
        compactionDuration.record(duration: .now - start)
        compactionRuns.increment()
    }

    /// A compaction failure as the tenant's status counts it (`compactionFailures`).
    func compactionFailed() { compactionFailures.increment() }

    /// Layer files a compaction step listed in the index.
    func compactionListed(bytes: Int) { compactionBytes.increment(by: bytes) }

    func collectedGarbage(layers: Int) { gcLayersRemoved.increment(by: layers) }

    func layerDownloaded(bytes: Int, since start: ContinuousClock.Instant) {
        layerDownloadDuration.record(duration: .now - start)
        layerDownloads.increment()
        layerDownloadBytes.increment(by: bytes)
    }

    /// An eviction pass ended with `local` bytes of layer files on disk, having removed `evicted` files.
    func evictionPass(local: Int, evicted: Int) {
        localLayerBytes.record(local)
        if evicted > 0 { layerEvictions.increment(by: evicted) }
    }

    // The names, once, with what they mean.
    static let ingestBytesTotal = MetricDescription(
        "layergate_ingest_bytes_total", .counter, "Bytes of page records appended to WALs (as encoded), after their fsync.")
    static let ingestRecordsTotal = MetricDescription(
        "layergate_ingest_records_total", .counter, "Page records stored by PutRecords, after their fsync.")
    static let walFsyncSeconds = MetricDescription(
        "layergate_wal_fsync_seconds", .durationHistogram(buckets: MetricDescription.exponentialBuckets(from: 50e-6, factor: 2, upTo: 3.2768)),
        "Time of one WAL fsync: one per group commit, and one when a segment is sealed (at a roll or a close).")
    static let groupCommitPutsName = MetricDescription(
        "layergate_group_commit_puts", .valueHistogram(buckets: MetricDescription.exponentialBuckets(from: 1, factor: 2, upTo: 1024)),
        "PutRecords requests written by one group commit (one WAL write and fsync).")
    static let flushesTotal = MetricDescription(
        "layergate_flushes_total", .counter, "In-memory layers written to L0 layer files and listed in the index.")
    static let flushFailuresTotal = MetricDescription(
        "layergate_flush_failures_total", .counter, "Flushes of an in-memory layer that failed (retried later).")
    static let flushWrittenBytesTotal = MetricDescription(
        "layergate_flush_written_bytes_total", .counter, "Bytes of L0 layer files written by flushes and listed in the index.")
    static let flushDurationSeconds = MetricDescription(
        "layergate_flush_duration_seconds", .durationHistogram(buckets: MetricDescription.exponentialBuckets(from: 1e-3, factor: 4, upTo: 65.536)),
        "Time to write one L0 layer file and the index that lists it.")
    static let compactionRunsTotal = MetricDescription(
        "layergate_compaction_runs_total", .counter, "Compaction runs (background and requested), including runs with nothing to do.")
    static let compactionFailuresTotal = MetricDescription(
        "layergate_compaction_failures_total", .counter,
        "Compactions that failed, as the tenant's status counts them (a reset or stop meanwhile is not a failure); their unlisted outputs were removed.")
    static let compactionDurationSeconds = MetricDescription(
        "layergate_compaction_duration_seconds", .durationHistogram(buckets: MetricDescription.exponentialBuckets(from: 1e-3, factor: 4, upTo: 262.144)),
        "Time of one compaction run: L0 merge, image layers and GC.")
    static let compactionWrittenBytesTotal = MetricDescription(
        "layergate_compaction_written_bytes_total", .counter, "Bytes of layer files written by compaction and listed in the index.")
    static let gcLayersRemovedTotal = MetricDescription(
        "layergate_gc_layers_removed_total", .counter, "Layers that garbage collection removed from the index (below the GC horizon).")

    static let layerDownloadsTotal = MetricDescription(
        "layergate_layer_downloads_total", .counter, "Layer files downloaded from remote storage because a read or a compaction needed a layer that was not local.")
    static let layerDownloadBytesTotal = MetricDescription(
        "layergate_layer_download_bytes_total", .counter, "Bytes of layer files downloaded from remote storage.")
    static let layerDownloadSeconds = MetricDescription(
        "layergate_layer_download_seconds", .durationHistogram(buckets: MetricDescription.exponentialBuckets(from: 1e-3, factor: 4, upTo: 262.144)),
        "Time to download, verify, publish and open one layer file.")
    static let layerEvictionsTotal = MetricDescription(
        "layergate_layer_evictions_total", .counter, "Local layer files removed to keep within --local-layer-budget-mib (their objects stay in remote storage).")
    static let localLayerBytesName = MetricDescription(
        "layergate_local_layer_bytes", .gauge, "Bytes of layer files on the local disk after the last eviction pass (only with --local-layer-budget-mib).")

    public static let descriptions: [MetricDescription] = [
        ingestBytesTotal, ingestRecordsTotal, walFsyncSeconds, groupCommitPutsName, flushesTotal, flushFailuresTotal,
        flushWrittenBytesTotal, flushDurationSeconds, compactionRunsTotal, compactionFailuresTotal, compactionDurationSeconds,
        compactionWrittenBytesTotal, gcLayersRemovedTotal, layerDownloadsTotal, layerDownloadBytesTotal,
        layerDownloadSeconds, layerEvictionsTotal, localLayerBytesName,
    ]
}
