/// Knobs of a tenant's storage (the server's flags map onto these).
public struct TenantConfig: Sendable {
    /// In-memory bytes at which the open layer is frozen and flushed to an L0 layer.
    public var checkpointDistanceBytes = 64 << 20
    /// How long `getPage` waits for an LSN beyond last_record_lsn by default.
    public var waitLsnTimeout: Duration = .seconds(10)
    /// Reads waiting for an LSN at once, per tenant; one more is refused
    /// (`resourceExhausted`). A waiting read costs a task and its timer.
    public var maxLsnWaiters = 4096
    /// Frozen layers waiting for flush before puts wait for the flush (back-pressure).
    public var maxFrozenLayers = 4
    /// How long the background flush waits after a failure before trying
    /// again; it doubles with each consecutive failure up to `flushMaxBackoff`.
    public var flushRetryDelay: Duration = .seconds(1)
    public var flushMaxBackoff: Duration = .seconds(30)
    /// How long a put held back by unflushed memory waits for a flush before it
    /// is answered `resourceExhausted`.
    public var ingestStallTimeout: Duration = .seconds(10)
    /// Free space kept on the data directory's filesystem beyond what flushing
    /// the in-memory data and one compaction step need: ingest stops before it
    /// would take it (0 turns the whole budget off but for flushes).
    public var diskReserveBytes = 64 << 20
    /// Layer-file descriptors the process keeps open at most (`OpenFileTable`).
    public var maxOpenLayerFiles = 256
    /// Layer-file descriptors open outside those slots at once: a read's own
    /// while every slot is busy, or one just opened on its way into a slot.
    /// Past it a read waits for one to close (nil: no limit).
    public var maxLooseLayerFiles: Int? = nil
    /// Layer files are read past the OS page cache (O_DIRECT) where the
    /// filesystem allows it: the page cache is then the only cache of them.
    public var directLayerReads = false
    /// Descriptors open tenants may hold together (`DescriptorBudget`,
    /// three each); a tenant beyond stays `loading` until one closes.
    public var maxTenantDescriptors = Int.max
    /// Remote-store calls in flight at once, over all tenants (uploads,
    /// downloads, checks, index writes): each holds descriptors while it
    /// runs (nil: no limit). Past it a call waits for one to end.
    public var maxRemoteCalls: Int?
    /// How long a failed load (full disk, no descriptors) waits before it is
    /// tried again; doubles up to `flushMaxBackoff`.
    public var loadRetryDelay: Duration = .seconds(1)
    /// How often a tenant's remote copy is compared with its index when
    /// nothing changed (a changed index starts an upload at once).
    public var remoteSyncPeriod: Duration = .seconds(1)
    /// How often a pass lists the store though nothing changed locally, so
    /// that an object lost from the store is uploaded again (or reported, if
    /// its local copy was evicted).
    public var remoteAuditPeriod: Duration = .seconds(60)
    /// The wait after a failed upload pass; doubles up to `remoteMaxBackoff`.
    public var remoteRetryDelay: Duration = .seconds(1)
    public var remoteMaxBackoff: Duration = .seconds(60)
    /// How long a detach waits for the uploads before it gives up (the tenant then stays).
    public var detachTimeout: Duration = .seconds(120)
    /// Bytes of layer files kept on the local disk, over all tenants, when
    /// there is remote storage (nil: no limit). Files beyond it that the
    /// store holds are removed, least recently read first, and downloaded
    /// again by the read that needs them (`LocalLayerBudget.swift`).
    public var localLayerBudgetBytes: Int?
    /// How often the eviction pass runs.
    public var evictionPeriod: Duration = .seconds(1)
    /// L0 layers that make the background loop merge them into L1.
    public var compactionThreshold = 10
    /// Delta layers above the newest image that make compaction write images.
    public var imageCreationThreshold = 3
    /// Compaction output is split at about this size (at key boundaries).
    public var targetFileBytes = 128 << 20
    /// One L0→L1 merge step reads at most this much (and less when free space
    /// is short); more L0 layers are merged in further steps.
    public var compactionBatchBytes = 1 << 30
    /// GC keeps every page readable at LSNs at most this far below last_record_lsn.
    public var gcHorizonLsn: UInt64 = 64 << 20
    /// How often the background loop looks for work.
    public var compactionPeriod: Duration = .seconds(20)
    /// Back-off after consecutive failures doubles up to this.
    public var compactionMaxBackoff: Duration = .seconds(300)

    public init() {}
}

public struct LayerInfo: Equatable, Sendable {
    public var name: String
    public var isImage: Bool
    public var lsnStart: Lsn
    public var lsnEnd: Lsn
    public var size: Int
    /// False while the file is only in remote storage (evicted, or not read since an attach). A file a
    /// download published but could not open counts as local: it takes the disk until it is opened or removed.
    public var isLocal: Bool = true
}

public struct TenantStatus: Sendable {
    public var tenantId: TenantId
    public var state: TenantState
    public var lastRecordLsn: Lsn
    public var diskConsistentLsn: Lsn
    public var gcCutoffLsn: Lsn
    public var generation: UInt32
    public var layers: [LayerInfo]
    /// Records in the open and frozen in-memory layers.
    public var inMemoryRecords: Int
    /// Consecutive failed flushes of the in-memory layers (0 after a success).
    public var flushFailures: Int
    public var lastFlushError: String?
    /// Consecutive compaction failures (0 after a success).
    public var compactionFailures: Int
    public var lastCompactionError: String?
    /// WAL tails cut at loads of this tenant since the process started:
    /// unverified bytes after the last verified commit (see `WalReplay`).
    public var walTailCuts: Int
    public var lastWalTailCut: String?
    /// Why the last load failed, while the tenant is loading or broken.
    public var lastLoadError: String?
    /// The remote copy, when the server has remote storage.
    public var remote: RemoteStatus? = nil
}

/// How far a tenant's remote copy is behind its local index.
public struct RemoteStatus: Equatable, Sendable {
    /// disk_consistent_lsn of the newest remote index stored (or found at start); nil before there is one.
    public var remoteConsistentLsn: Lsn?
    /// Layers the local index lists that the store does not hold yet.
    public var layersPendingUpload: Int
    /// Consecutive failed upload passes (0 after one that caught up).
    public var uploadFailures: Int
    public var lastUploadFailure: RemoteError?
    public var lastUploadError: String? { lastUploadFailure?.description }
    /// A newer generation's remote index exists: this server no longer writes the tenant's objects.
    public var fencedByGeneration: UInt32?
    /// Bytes of layer objects stored since the server started.
    public var uploadedBytes: Int
}

/// What one compaction did.
public struct CompactionResult: Equatable, Sendable {
    public var layersCreated = 0
    public var layersRemoved = 0
    public var bytesWritten = 0

    public init() {}

    mutating func add(_ o: CompactionResult) {
        layersCreated += o.layersCreated
        layersRemoved += o.layersRemoved
        bytesWritten += o.bytesWritten
    }
}

public struct ResetResult: Equatable, Sendable {
    public var generation: UInt32
    public var filesSwept: Int
}

/// What a load read from disk: the index (with its new generation), the open
/// layers it lists, the WAL, and what the sweep removed.
struct LoadedTenant: Sendable {
    var directory: DirectoryHandle
    var index: IndexFile
    var layers: LayerMap
    var wal: Wal
    var replayed: [Record]
    var filesSwept: Int
    var walTailCut: WalReplay.TailCut?
    /// How its layers come back from remote storage, when there is one.
    var download: LayerDownload?
}
