/// What a tenant remembers of its background work, for its status, its
/// back-off and its metrics: kept in `Tenant.Inner`, under the tenant's lock.

/// Flushes of frozen in-memory layers to L0 files.
struct FlushRecord {
    /// Frozen layers flushed since the tenant opened (`Tenant.flushProgress` follows it).
    var layersFlushed: UInt64 = 0
    /// Consecutive failures; 0 after a success.
    var failures = 0
    var lastError: String?
    var retryScheduled = false
    /// When the last failed flush was tried (a held-back put may try again
    /// sooner than the back-off, but not more than once per retry delay).
    var lastFailureAt: ContinuousClock.Instant?
}

/// Compaction runs.
struct CompactionRecord {
    /// Consecutive failures; 0 after a success.
    var failures = 0
    var lastError: String?
    /// The background loop waits until then (its back-off).
    var notBefore: ContinuousClock.Instant?
    /// Set by reset and close: a running compaction stops at its next value.
    var cancelled = false
    /// The last compaction started because ingest was refused for space.
    var lastForSpace: ContinuousClock.Instant?
    /// What an image set stopped for room showed it needs at least: image
    /// creation waits for that much room (with less it would write as far
    /// and remove it again, every compaction). 0 once a set is written.
    var imagesNeedAtLeast = 0
}

/// Loads of the tenant from its index and WAL.
struct LoadRecord {
    /// Why the last load failed, while the tenant is still loading.
    var lastError: String?
    /// Consecutive failed loads (the retry back-off).
    var failures = 0
    /// Torn WAL tails cut at loads since the tenant opened.
    var walTailCuts = 0
    var lastWalTailCut: String?
}
