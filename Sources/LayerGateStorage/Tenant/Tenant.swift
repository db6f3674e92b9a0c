import Logging
import Synchronization

/// One tenant: its WAL, in-memory layers, layer map and index, and the
/// lifecycle that says whether it serves.
///
/// Shared state lives in one `Mutex` that is never held across disk I/O.
/// Maintenance that rewrites the index — flush, reset, close (and compaction
/// later) — is serialized by `maintenance`, an async lock, so the index in
/// memory is always the one on disk.
public final class Tenant: Sendable {
    public let id: TenantId
    public let directory: String
    let config: TenantConfig
    let cache: PageCache
    let failpoints: Failpoints
    let logger: Logger

    struct PendingPut {
        var records: [Record]
        var bytes: [UInt8]
        var continuation: CheckedContinuation<Result<Lsn, StorageError>, Never>
    }

    struct LsnWaiter {
        var lsn: Lsn
        var continuation: CheckedContinuation<Result<Void, StorageError>, Never>
        var timer: Task<Void, Never>?
    }

    struct Inner {
        var lifecycle: TenantState = .loading
        var index: IndexFile
        var lastRecordLsn = Lsn.zero
        /// Last LSN accepted into the commit queue: new puts must be above it.
        var reservedLsn = Lsn.zero
        var open = InMemoryLayer(startLsn: Lsn(1))
        /// Oldest first.
        var frozen: [InMemoryLayer] = []
        var layers = LayerMap()
        var wal: Wal?
        var pending: [PendingPut] = []
        var committing = false
        var waiters: [UInt64: LsnWaiter] = [:]
        var nextWaiterId: UInt64 = 0
        var lastFlushError: String?
        var compactionFailures = 0
        var lastCompactionError: String?
        var compactionNotBefore: ContinuousClock.Instant?
        /// Set by reset and close: a running compaction stops at its next value.
        var compactionCancelled = false

        var generation: UInt32 { index.generation }
        var diskConsistentLsn: Lsn { Lsn(index.diskConsistentLsn) }
        var gcCutoff: Lsn { Lsn(index.gcCutoffLsn) }
    }

    let state: Mutex<Inner>
    let maintenance = AsyncLock()
    /// One compaction at a time; it takes `maintenance` only to commit.
    let compactionLock = AsyncLock()
    let flushSignal: AsyncStream<Void>.Continuation
    let flushSignalsStream: AsyncStream<Void>

    init(id: TenantId, directory: String, config: TenantConfig, cache: PageCache, failpoints: Failpoints, logger: Logger) {
        self.id = id
        self.directory = directory
        self.config = config
        self.cache = cache
        self.failpoints = failpoints
        var logger = logger
        logger[metadataKey: "tenant"] = "\(id)"
        self.logger = logger
        state = Mutex(Inner(index: IndexFile(tenant: id)))
        (flushSignalsStream, flushSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Opens the tenant in `directory` (which holds its index.json): loads it and
    /// starts its background flush. A tenant that fails to load is returned
    /// broken, with the reason in its status.
    public static func open(
        id: TenantId, directory: String, config: TenantConfig = TenantConfig(), cache: PageCache,
        failpoints: Failpoints = .shared, logger: Logger = Logger(label: "layergate.storage")
    ) async -> Tenant {
        let tenant = Tenant(id: id, directory: directory, config: config, cache: cache, failpoints: failpoints, logger: logger)
        await tenant.maintenance.lock()
        _ = try? await tenant.loadLocked()
        tenant.maintenance.unlock()
        tenant.startBackgroundFlush()
        tenant.startBackgroundCompaction()
        return tenant
    }

    public var lifecycle: TenantState { state.withLock { $0.lifecycle } }

    public func status() -> TenantStatus {
        state.withLock { s in
            TenantStatus(
                tenantId: id, state: s.lifecycle, lastRecordLsn: s.lastRecordLsn,
                diskConsistentLsn: s.diskConsistentLsn, gcCutoffLsn: s.gcCutoff, generation: s.generation,
                layers: s.layers.layers.map { l in
                    let n = l.descriptor.name
                    return LayerInfo(name: l.descriptor.fileName, isImage: n.kind == .image, lsnStart: n.lsnStart,
                                     lsnEnd: n.lsnEnd, size: l.descriptor.size)
                },
                inMemoryRecords: s.open.recordCount + s.frozen.reduce(0) { $0 + $1.recordCount },
                lastFlushError: s.lastFlushError, compactionFailures: s.compactionFailures,
                lastCompactionError: s.lastCompactionError)
        }
    }

    /// Stops the tenant: no more reads or puts, in-flight commits finish, the
    /// WAL is closed. Unflushed records stay in the WAL for the next load.
    public func close() async {
        await maintenance.lock()
        await closeLocked()
        maintenance.unlock()
        // A running compaction stops at its next value (or finds the tenant
        // stopped when it commits, which needs `maintenance`): wait for it.
        await compactionLock.lock()
        compactionLock.unlock()
    }

    private func closeLocked() async {
        let waiters = state.withLock { s -> [LsnWaiter] in
            s.lifecycle = TenantLifecycle.next(s.lifecycle, on: .stop) ?? s.lifecycle
            s.compactionCancelled = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters {
            w.timer?.cancel()
            w.continuation.resume(returning: .failure(.tenantUnavailable(id, state: "stopped")))
        }
        await drainCommits()
        state.withLock { $0.wal }?.close()
        flushSignal.finish()
    }

    /// Waits until the commit leader has nothing in flight.
    func drainCommits() async {
        while state.withLock({ $0.committing }) {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }
}
