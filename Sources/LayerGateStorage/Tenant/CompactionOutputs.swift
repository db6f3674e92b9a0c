/// The files one compaction step writes: a run of layers of one kind and LSN
/// range, split at key boundaries near the target size.
///
/// Every file is published through the gate as it fills, into an
/// `UnlistedLayers` guard that the step's commit disarms once the index lists
/// them; if anything fails before that, the guard deletes them. Before each
/// `DiskBudget.compactionWriteAhead` it writes, it checks that the disk still
/// has room beyond what flushes need (`DiskBudget.admitCompactionWrite`).
final class CompactionOutputs {
    private let directory: DirectoryHandle
    private let tenant: TenantId
    private let kind: LayerName.Kind
    private let lsnStart: Lsn
    private let lsnEnd: Lsn
    private let generation: UInt32
    private let targetBytes: Int
    private let failpoints: Failpoints
    private let isCancelled: () -> Bool
    private let budget: DiskBudget
    /// What the values appended since the last room check take on disk, at
    /// most, and what that check allowed (nil: no check yet); what the values
    /// of the file being written take, at most; what the budget granted.
    private var sinceCheck = 0
    private var allowance: Int?
    private var fileBound = 0
    private var granted = 0

    /// What the values appended so far take on disk at most, with the end of each file started.
    private var boundOfAll = 0
    /// Set when the room ran out: the least the whole run needs (what it
    /// wrote, the value that did not fit, the file's end). An attempt with
    /// no more room would stop at the same place.
    private(set) var stoppedNeedingAtLeast: Int?

    let published: UnlistedLayers
    private var writer: LayerWriter?
    private var writerBytes = 0
    private var lastKey: PageKey?

    init(directory: DirectoryHandle, tenant: TenantId, kind: LayerName.Kind, lsnStart: Lsn, lsnEnd: Lsn,
         generation: UInt32, targetBytes: Int, budget: DiskBudget, failpoints: Failpoints,
         isCancelled: @escaping () -> Bool)
    {
        self.directory = directory
        self.tenant = tenant
        self.kind = kind
        self.lsnStart = lsnStart
        self.lsnEnd = lsnEnd
        self.generation = generation
        self.targetBytes = targetBytes
        self.failpoints = failpoints
        self.isCancelled = isCancelled
        self.budget = budget
        published = UnlistedLayers(directory: directory)
    }

    deinit {
        writer?.discard()
        budget.giveBack(&granted)
    }

    /// Values come in (key, lsn) order. A new file starts only at a new key, so
    /// all versions of a key stay in one file.
    func append(key: PageKey, lsn: Lsn, value: RecordValue) throws(StorageError) {
        if isCancelled() { throw .cancelled("compaction of tenant \(tenant) (tenant is resetting or stopping)") }
        let bound = LayerWriter.diskBound(of: value)
        if allowance.map({ sinceCheck + bound > $0 }) ?? true {
            // The file's values not yet written out (its buffer) and its whole index are not on the disk yet.
            let pending = fileBound - (writer?.dataOnDisk ?? 0)
            do {
                allowance = try budget.admitCompactionWrite(
                    tenant: tenant, writing: kind == .image ? "image layers" : "merged delta layers", pending: pending, next: bound,
                    held: &granted)
            } catch {
                // The file being written counted its end when it started.
                if case .resourceExhausted = error {
                    stoppedNeedingAtLeast = boundOfAll + bound + (writer == nil ? DiskBudget.layerFileEnd : 0)
                }
                throw error
            }
            sinceCheck = 0
        }
        if writer != nil, writerBytes >= targetBytes, key != lastKey { try finishCurrent() }
        if !published.layers.isEmpty { try failpoints.hit("compaction-after-first-output") }
        if writer == nil {
            writer = try LayerWriter(directory: directory, tenant: tenant, kind: kind, lsnStart: lsnStart, lsnEnd: lsnEnd,
                                     generation: generation, failpoints: failpoints)
            writerBytes = 0
            boundOfAll += DiskBudget.layerFileEnd
        }
        try writer?.append(key: key, lsn: lsn, value: value)
        writerBytes += ValueCodec.encodedSize(value) + LayerFormat.Version.written.entrySize
        sinceCheck += bound
        fileBound += bound
        boundOfAll += bound
        lastKey = key
    }

    /// Publishes the last file; the outputs stay in `published` for the commit.
    func finish() throws(StorageError) {
        if writer != nil { try finishCurrent() }
    }

    private func finishCurrent() throws(StorageError) {
        guard let w = writer else { return }
        writer = nil
        published.add(try w.finish())
        fileBound = 0
    }

    /// Removes the file being written and every published, unlisted output.
    func discardAll() {
        writer?.discard()
        writer = nil
        published.rollback()
    }
}

/// Walks a layer's entries in (key, lsn) order, one index block at a time,
/// so a merge holds one block per input whatever the layer sizes.
struct LayerCursor {
    let layer: LayerReader
    private var block = 0
    private var entries: [IndexEntry] = []
    private var position = 0

    init(_ layer: LayerReader) throws(StorageError) {
        self.layer = layer
        entries = try layer.indexEntries(block: 0)
    }

    var current: IndexEntry? { position < entries.count ? entries[position] : nil }

    mutating func advance() throws(StorageError) {
        position += 1
        if position >= entries.count && block + 1 < layer.indexBlockCount {
            block += 1
            entries = try layer.indexEntries(block: block)
            position = 0
        }
    }
}

/// The index of the cursor with the smallest (key, lsn), or nil when all are done.
func smallestCursor(_ cursors: [LayerCursor]) -> Int? {
    var best: Int?
    for (i, c) in cursors.enumerated() {
        guard let e = c.current else { continue }
        if let b = best, let be = cursors[b].current, (be.key, be.lsn.rawValue) <= (e.key, e.lsn.rawValue) { continue }
        best = i
    }
    return best
}
