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
    let compactionRuns: Counter
    let compactionFailures: Counter
    let compactionDuration: Timer
    let compactionBytes: Counter
    let gcLayersRemoved: Counter

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
        compactionRuns = Self.compactionRunsTotal.counter(factory)
        compactionFailures = Self.compactionFailuresTotal.counter(factory)
        compactionDuration = Self.compactionDurationSeconds.timer(factory)
        compactionBytes = Self.compactionWrittenBytesTotal.counter(factory)
        gcLayersRemoved = Self.gcLayersRemovedTotal.counter(factory)
    }

    func ingested(puts: Int, records: Int, bytes: Int) {
        groupCommitPuts.record(puts)
        ingestRecords.increment(by: records)
        ingestBytes.increment(by: bytes)
    }

    func flushed(after start: ContinuousClock.Instant, failed: Bool) {
        flushDuration.record(duration: .now - start)
        (failed ? flushFailures : flushes).increment()
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

    public static let descriptions: [MetricDescription] = [
        ingestBytesTotal, ingestRecordsTotal, walFsyncSeconds, groupCommitPutsName, flushesTotal, flushFailuresTotal,
        flushDurationSeconds, compactionRunsTotal, compactionFailuresTotal, compactionDurationSeconds,
        compactionWrittenBytesTotal, gcLayersRemovedTotal,
    ]
}
