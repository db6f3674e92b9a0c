import Synchronization

/// How the engine shares the free space of the data directory's filesystem,
/// so that a full disk stops ingest early instead of breaking anything:
///
/// - ingest (a WAL append) must leave room to flush everything that is in
///   memory (every tenant's), room for one compaction step (three
///   checkpoint distances: two L0 layers, which may each run a little over
///   the distance, merged), and a fixed reserve for
///   index files and seals;
/// - a flush may use the room kept for it;
/// - compaction gets what is left above the flushes' room and the reserve,
///   works in steps that fit, and checks as it writes that it stays within
///   that (`admitCompactionWrite`).
///
/// So a flush can always complete (its WAL segments then go, giving the space
/// back), and a disk that ingest filled still has room for compaction to
/// write images so that GC can free old layers. Checked with statvfs before
/// each write that grows the data (one call per group commit, flush or
/// compaction step).
final class DiskBudget: Sendable {
    let fs: any FileSystem
    let reserveBytes: Int
    private let mergeRoomBytes: Int
    private let unflushed = Atomic<Int>(0)
    /// What compaction steps, downloads and commits writing now have been
    /// granted and not yet given back (`admitCompactionWrite`,
    /// `admitDownload`, `admitIngest`): bytes they may write, and bytes they
    /// wrote that may not be on the disk or in the flushes' room yet.
    private let grants = Atomic<Int>(0)
    /// The size of each tenant's newest image set: compaction's room must
    /// hold the largest, or GC could never get its base written.
    private let imageSets = Mutex<[TenantId: Int]>([:])

    init(fs: any FileSystem, reserveBytes: Int, checkpointDistanceBytes: Int) {
        self.fs = fs
        self.reserveBytes = reserveBytes
        mergeRoomBytes = reserveBytes == 0 ? 0 : checkpointDistanceBytes * 3
    }

    /// Room kept for one compaction step: a merge of two L0 layers, or an image set.
    var compactionRoomBytes: Int {
        guard reserveBytes > 0 else { return 0 }
        return max(mergeRoomBytes, imageSets.withLock { $0.values.max() ?? 0 })
    }

    func noteImageSet(of tenant: TenantId, bytes: Int) { imageSets.withLock { $0[tenant] = bytes } }

    func imageSetBytes(of tenant: TenantId) -> Int { imageSets.withLock { $0[tenant] ?? 0 } }

    /// True when ingest is being refused for space: compaction should then
    /// write what lets GC give space back.
    func isUnderPressure() -> Bool {
        guard let free = try? available() else { return true }
        return free < unflushedRoom + Self.flushSize(1 << 20) + compactionRoomBytes + reserveBytes + grantedBytes
    }

    /// What the flushes of every tenant's in-memory layers may write: the
    /// sum of `flushSize` over those layers, each its own file.
    var unflushedRoom: Int { max(0, unflushed.load(ordering: .relaxed)) }

    func adjustUnflushedRoom(by delta: Int) {
        if delta != 0 { unflushed.add(delta, ordering: .relaxed) }
    }

    /// The most a flush of one in-memory layer of `bytes` of records (as
    /// `InMemoryLayer.countedBytes` counts them: encoded size and 32) writes.
    /// A record takes at most `LayerWriter.diskBound`: its encoded size and
    /// 44, and an image 2,048 more. So at most 4/3 of its count: a will_init
    /// delta without patches (4 bytes, counted 36) 48 (in a file, 46.4), an
    /// image (counted 8,225) 10,285. A file adds `layerFileEnd`. Why
    /// a bound and not an estimate: ingest keeps this much free, so that a
    /// flush can always complete.
    static func flushSize(_ bytes: Int) -> Int { bytes == 0 ? 0 : bytes + bytes / 3 + layerFileEnd }

    func available() throws(StorageError) -> Int {
        Int(clamping: try Directory.availableBytes(fs, ""))
    }


    /// Admits a WAL append of `walBytes` for `tenant`, whose records memory
    /// counts as `memoryBytes` (`InMemoryLayer.countedBytes`), or says why
    /// not. Admitted, it holds (`held`) the append and the room to flush
    /// its records until the tenant's in-memory count has them
    /// (`adjustUnflushedRoom`), then the commit gives it back: another
    /// tenant's commit admitted meanwhile keeps it free, where it would
    /// otherwise see the same free space, and the two could both pass and
    /// leave too little to flush both.
    func admitIngest(walBytes: Int, memoryBytes: Int, tenant: TenantId, held: inout Int) throws(StorageError) {
        // The records join the open layer: its flush grows by at most a flush of them alone.
        let mine = walBytes + Self.flushSize(memoryBytes)
        let (free, room) = try grant(most: mine, least: mine, plus: 0, keeping: compactionRoomBytes, held: &held)
        guard held > 0 else {
            let kept = free - room + Self.flushSize(memoryBytes)
            throw .resourceExhausted(
                "tenant \(tenant): the disk is nearly full (\(ByteCount.describe(free)) free; this put would take \(ByteCount.describe(walBytes)) and \(ByteCount.describe(kept)) are kept so that what is in memory, this put's records with it, can be flushed and compacted): nothing of this put was stored. Free space on the data directory's filesystem, or compact so that GC can remove old history, then retry")
        }
    }

    /// Checks that a flush of `bytes` of records fits.
    func admitFlush(bytes: Int, tenant: TenantId) throws(StorageError) {
        let free = try available()
        let need = Self.flushSize(bytes)
        guard free >= need else {
            throw .resourceExhausted(
                "tenant \(tenant): the disk is full: a flush needs \(ByteCount.describe(need)), \(ByteCount.describe(free)) are free. The records stay in the WAL and memory; the flush is retried with back-off")
        }
    }

    /// Admits the download of a layer of `bytes` that a read needs: it may
    /// not take the flushes' room, the reserve or what compaction was
    /// granted, and holds its bytes (`held`, given back with `giveBack` once
    /// the file is whole on the disk, or gone).
    func admitDownload(bytes: Int, tenant: TenantId, layer: String, held: inout Int) throws(StorageError) {
        let (_, room) = try grant(most: bytes, least: bytes, plus: 0, held: &held)
        guard held > 0 || bytes == 0 else {
            throw .resourceExhausted(
                "tenant \(tenant): layer \(layer) is only in remote storage, and the disk has no room to download it (\(ByteCount.describe(bytes)); \(ByteCount.describe(room)) free beyond what flushes need). Free space, or lower --local-layer-budget-mib, then retry")
        }
    }

    /// The most a compaction step writes between two checks of the room.
    static let compactionWriteAhead = 1 << 20
    /// What a layer file's end may add when it is finished (index and fence
    /// padding, the data's last block, the summary).
    static let layerFileEnd = 4 * LayerFormat.blockSize

    /// Checked by a compaction step as it writes, before a value of at most
    /// `next` bytes: gives back what the step held (`held`), then grants it
    /// `pending` (what it wrote that may not be on the disk yet: its file's
    /// buffer and index), its file's end, and up to `compactionWriteAhead`
    /// more out of the room beyond the flushes' room, the reserve and the
    /// other grants. Returns what it may write before it checks again.
    /// Why while writing, and not once before: an image set's size is not
    /// known until it is written (a tenant's first is estimated at nothing),
    /// and other tenants' steps write at the same time. Either could
    /// otherwise take the room kept for flushes, and a put already
    /// acknowledged could not be flushed. Ingest keeps the grants free too.
    func admitCompactionWrite(tenant: TenantId, writing what: String = "its outputs", pending: Int, next: Int,
                              held: inout Int) throws(StorageError) -> Int {
        giveBack(&held)
        let (_, room) = try grant(most: Self.compactionWriteAhead, least: next, plus: pending + Self.layerFileEnd, held: &held)
        guard held > 0 else {
            throw .resourceExhausted(
                "tenant \(tenant): compaction stopped writing \(what): the disk has \(ByteCount.describe(room)) free beyond what flushes need, and what it wrote is removed. Free space on the data directory's filesystem; compaction resumes by itself")
        }
        return held - pending - Self.layerFileEnd
    }

    /// Grants `plus` and between `least` and `most` bytes more out of the
    /// room beyond the flushes', the reserve, `keeping` and the other grants,
    /// into `held` (left 0 when even `least` does not fit); returns the free
    /// space and that room (negative when the rest takes more than is free).
    /// The most is taken first and the rest given back, so that two grants
    /// made at once each see the other: they may both be refused, never both
    /// given the same bytes.
    private func grant(most: Int, least: Int, plus: Int, keeping: Int = 0, held: inout Int)
        throws(StorageError) -> (free: Int, room: Int)
    {
        grants.add(plus + most, ordering: .relaxed)
        let others = grantedBytes - plus - most
        let free: Int
        do { free = try available() } catch {
            grants.subtract(plus + most, ordering: .relaxed)
            throw error
        }
        let room = free - unflushedRoom - reserveBytes - keeping - others - plus
        let granted = min(max(0, room), most)
        guard granted >= least else {
            grants.subtract(plus + most, ordering: .relaxed)
            return (free, room)
        }
        grants.subtract(most - granted, ordering: .relaxed)
        held = plus + granted
        return (free, room)
    }

    /// Gives back what a compaction step, a download or a commit was granted (it ended, or checks again).
    func giveBack(_ held: inout Int) {
        if held != 0 { grants.subtract(held, ordering: .relaxed) }
        held = 0
    }

    private var grantedBytes: Int { max(0, grants.load(ordering: .relaxed)) }

    /// Bytes compaction (or a download) may write now without taking the flushes' room or the reserve.
    func compactionBudget() throws(StorageError) -> Int {
        let free = try available()
        return max(0, free - unflushedRoom - reserveBytes - grantedBytes)
    }
}
