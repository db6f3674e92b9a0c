import Logging
import Synchronization

/// What every tenant's file work shares: the filesystem, the bounded set of
/// open layer files, the page cache, the disk budget, the failpoints and the metrics.
public struct TenantStorage: Sendable {
    public let fs: any FileSystem
    /// Where `fs` is rooted, for the operator's log (never in a client's message).
    public let root: String
    public let openFiles: OpenFileTable
    public let cache: PageCache
    let budget: DiskBudget
    public let descriptors: DescriptorBudget
    public let failpoints: Failpoints
    let metrics: StorageMetrics
    /// Where layers are copied beyond this disk (`--remote-storage`), or nil.
    public let remote: (any RemoteStore)?

    init(fs: any FileSystem, root: String, openFiles: OpenFileTable, cache: PageCache, budget: DiskBudget,
         descriptors: DescriptorBudget, failpoints: Failpoints, metrics: StorageMetrics, remote: (any RemoteStore)?) {
        self.fs = fs
        self.root = root
        self.openFiles = openFiles
        self.cache = cache
        self.budget = budget
        self.descriptors = descriptors
        self.failpoints = failpoints
        self.metrics = metrics
        self.remote = remote
    }
}

/// One tenant: its WAL, in-memory layers, layer map and index, and the
/// lifecycle that says whether it serves.
///
/// Shared state lives in one `Mutex` that is never held across disk I/O.
/// Maintenance that rewrites the index — flush, reset, close and the commit of
/// a compaction step — is serialized by `maintenance`, an async lock, so the
/// index in memory is always the one on disk. Lock order: `compactionLock`,
/// then `maintenance`.
public final class Tenant: Sendable {
    public let id: TenantId
    /// Relative to the data directory: `tenants/<id>`.
    public let directory: String
    let storage: TenantStorage
    let config: TenantConfig
    let logger: Logger

    var cache: PageCache { storage.cache }
    var failpoints: Failpoints { storage.failpoints }

    struct PendingPut {
        var records: [Record]
        var bytes: [UInt8]
        var continuation: CheckedContinuation<Result<Lsn, StorageError>, Never>
    }

    struct Inner {
        var lifecycle: TenantState = .loading
        /// Open once the tenant has loaded.
        var directory: DirectoryHandle?
        /// This tenant's share of the descriptor table is taken (`DescriptorBudget`).
        var holdsDescriptors = false
        var index: IndexFile
        var lastRecordLsn = Lsn.zero
        var commits = CommitQueue<PendingPut>()
        var open = InMemoryLayer(startLsn: Lsn(1))
        /// Oldest first.
        var frozen: [InMemoryLayer] = []
        var layers = LayerMap()
        /// How an evicted layer comes back (remote storage only); made at each load.
        var layerDownload: LayerDownload?
        var wal: Wal?
        /// What flushing the in-memory layers may write, as counted in the disk budget.
        var unflushedRoom = 0
        var flush = FlushRecord()
        var compaction = CompactionRecord()
        var load = LoadRecord()

        var generation: UInt32 { index.generation }
        var diskConsistentLsn: Lsn { Lsn(index.diskConsistentLsn) }
        var gcCutoff: Lsn { Lsn(index.gcCutoffLsn) }
    }

    let state: Mutex<Inner>
    let maintenance = AsyncLock()
    /// One compaction at a time; it takes `maintenance` only to commit.
    let compactionLock = AsyncLock()
    /// last_record_lsn, for readers waiting on an LSN not yet ingested.
    let lsnWait: SeqWait
    /// Frozen layers flushed so far, for puts held back by unflushed memory.
    let flushProgress = SeqWait()
    /// The commit leader's idle epochs, for `drainCommits`.
    let commitIdle = SeqWait()
    /// disk_consistent_lsn up to which the WAL has been deleted.
    let walRetired = SeqWait()
    /// Wakes the background compaction before its period is up.
    let compactionWake = SeqWait()
    /// Uploads to the remote store, when there is one (`TenantRemoteSync.swift`).
    let upload: TenantUpload?
    /// Advanced when the index changes, so the upload starts at once.
    let remoteWake = SeqWait()
    let flushSignal: AsyncStream<Void>.Continuation
    let flushSignalsStream: AsyncStream<Void>

    init(id: TenantId, directory: String, config: TenantConfig, storage: TenantStorage, logger: Logger) {
        self.id = id
        self.directory = directory
        self.config = config
        self.storage = storage
        var logger = logger
        logger[metadataKey: "tenant"] = "\(id)"
        self.logger = logger
        lsnWait = SeqWait(maxWaiters: config.maxLsnWaiters, overflow: .resourceExhausted(
            "tenant \(id): \(config.maxLsnWaiters) reads already wait for LSNs not yet ingested; retry later"))
        state = Mutex(Inner(index: IndexFile(tenant: id)))
        upload = storage.remote.map { TenantUpload(tenant: id, store: $0, fs: storage.fs, directory: directory,
                                                     failpoints: storage.failpoints, auditPeriod: config.remoteAuditPeriod,
                                                     logger: logger) }
        (flushSignalsStream, flushSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Opens the tenant in `directory` (which holds its index.json): loads it and
    /// starts its background flush and compaction. A tenant whose files are
    /// damaged is returned broken, with the reason in its status; one that could
    /// not load for want of space or descriptors stays `loading` and tries again
    /// with back-off.
    static func open(id: TenantId, directory: String, config: TenantConfig, storage: TenantStorage, logger: Logger)
        async -> Tenant
    {
        let tenant = Tenant(id: id, directory: directory, config: config, storage: storage, logger: logger)
        await tenant.maintenance.lock()
        _ = try? await tenant.loadLocked()
        tenant.maintenance.unlock()
        tenant.startBackgroundFlush()
        tenant.startBackgroundCompaction()
        tenant.startBackgroundUpload()
        return tenant
    }

    public var lifecycle: TenantState { state.withLock { $0.lifecycle } }

    /// The error for a request that finds the tenant not serving, or nil.
    func admission(_ s: Inner) -> StorageError? {
        if s.lifecycle == .loading, let e = s.load.lastError {
            return .tenantUnavailable(id, state: "loading (the last attempt failed: \(e))")
        }
        return TenantLifecycle.admission(s.lifecycle, tenant: id)
    }

    public func status() -> TenantStatus {
        let index = state.withLock { $0.index }
        let progress = upload?.progress(for: index)
        var status = state.withLock { s in
            TenantStatus(
                tenantId: id, state: s.lifecycle, lastRecordLsn: s.lastRecordLsn,
                diskConsistentLsn: s.diskConsistentLsn, gcCutoffLsn: s.gcCutoff, generation: s.generation,
                layers: s.layers.layers.map { l in
                    let n = l.descriptor.name
                    return LayerInfo(name: l.descriptor.fileName, isImage: n.kind == .image, lsnStart: n.lsnStart,
                                     lsnEnd: n.lsnEnd, size: l.descriptor.size, isLocal: l.hasLocalFile)
                },
                inMemoryRecords: s.open.recordCount + s.frozen.reduce(0) { $0 + $1.recordCount },
                flushFailures: s.flush.failures, lastFlushError: s.flush.lastError,
                compactionFailures: s.compaction.failures, lastCompactionError: s.compaction.lastError,
                walTailCuts: s.load.walTailCuts, lastWalTailCut: s.load.lastWalTailCut, lastLoadError: s.load.lastError)
        }
        status.remote = progress.map { p in
            RemoteStatus(remoteConsistentLsn: p.remoteConsistentLsn, layersPendingUpload: p.layersPendingUpload,
                         uploadFailures: p.failures, lastUploadFailure: p.lastFailure, fencedByGeneration: p.fencedBy,
                         uploadedBytes: p.uploadedBytes)
        }
        return status
    }

    /// Stops the tenant: no more reads or puts, in-flight commits finish, a
    /// running compaction stops, the WAL is sealed and closed. Unflushed records
    /// stay in the WAL for the next load.
    public func close() async {
        _ = await tearDown(on: .stop, failing: .tenantUnavailable(id, state: "stopped")) { _ in
            clearUnflushed()
            let held = state.withLock { s -> Bool in
                defer { s.holdsDescriptors = false; s.directory = nil }
                return s.holdsDescriptors
            }
            if held { storage.descriptors.releaseTenant() }
            flushSignal.finish()
            compactionWake.advance(to: compactionWake.value + 1)
        }
    }

    /// The teardown that close and reset share: the lifecycle moves on `event`
    /// (waiting reads and held-back puts fail with `error`), a running
    /// compaction stops, then — holding `compactionLock` and `maintenance` —
    /// the commit leader drains and the WAL closes before `body` runs with the
    /// state left. Nil, without running `body`, when `event` is not allowed now.
    func tearDown<T, E: Error>(on event: TenantEvent, failing error: StorageError,
                               _ body: (TenantState) async throws(E) -> T) async throws(E) -> T? {
        guard let previous = quiesce(to: event, error: error) else { return nil }
        await compactionLock.lock()
        defer { compactionLock.unlock() }
        await maintenance.lock()
        defer { maintenance.unlock() }
        await drainCommits()
        // A stopped tenant lets go of its WAL in the same step; a reset's reload replaces it (or keeps it, if abandoned).
        state.withLock { s -> Wal? in
            defer { if event == .stop { s.wal = nil } }
            return s.wal
        }?.close()
        return try await body(previous)
    }

    /// Moves the lifecycle on `event` (stop or reset), tells a running
    /// compaction to stop and fails every waiting reader and held-back put.
    /// Returns the state it left, or nil when the event is not allowed now.
    private func quiesce(to event: TenantEvent, error: StorageError) -> TenantState? {
        guard let t = state.withLock({ Self.move(&$0, on: event) }) else { return nil }
        if t.actions.contains(.failWaiters) {
            lsnWait.failAll(error)
            flushProgress.failAll(error)
        }
        return t.from
    }

    /// Moves the lifecycle of `s` on `event` and carries out the actions that
    /// are state; returns the move (its other actions are the caller's, after
    /// the lock), or nil when the event is not allowed now.
    @discardableResult
    static func move(_ s: inout Inner, on event: TenantEvent) -> TenantTransition? {
        guard let t = TenantLifecycle.transition(s.lifecycle, on: event) else { return nil }
        s.lifecycle = t.to
        if t.actions.contains(.stopCompaction) { s.compaction.cancelled = true }
        if t.actions.contains(.allowCompaction) { s.compaction.cancelled = false }
        return t
    }

    /// `base` doubled for each failure after the first, at most `cap`.
    static func backoff(_ base: Duration, failures: Int, cap: Duration) -> Duration {
        var d = base
        for _ in 1..<max(1, min(failures, 30)) { d = min(d * 2, cap) }
        return min(d, cap)
    }

    /// Waits until the commit leader has nothing in flight.
    func drainCommits() async {
        while true {
            let epoch = state.withLock { $0.commits.runningEpoch }
            guard let epoch else { return }
            _ = await commitIdle.wait(for: epoch + 1, timeout: .seconds(1))
        }
    }

    /// Counts what flushing the tenant's in-memory layers may write in the shared disk budget.
    func refreshUnflushed() {
        let delta = state.withLock { s -> Int in
            let now = Self.flushRoom(s)
            defer { s.unflushedRoom = now }
            return now - s.unflushedRoom
        }
        storage.budget.adjustUnflushedRoom(by: delta)
    }

    /// Takes the tenant's in-memory layers out of the shared disk budget (it stops).
    func clearUnflushed() {
        let delta = state.withLock { s -> Int in
            defer { s.unflushedRoom = 0 }
            return -s.unflushedRoom
        }
        storage.budget.adjustUnflushedRoom(by: delta)
    }

    /// What flushing the in-memory layers of `s` (open and frozen, a file each) may write.
    static func flushRoom(_ s: Inner) -> Int {
        s.frozen.reduce(DiskBudget.flushSize(s.open.approximateBytes)) { $0 + DiskBudget.flushSize($1.approximateBytes) }
    }
}
