/// What compaction should do, decided from layer descriptors alone (pure,
/// so every rule is testable without files).
struct CompactionPlan {
    struct Layer: Equatable {
        var name: LayerName
        var level: Int
        var size = 0
        var fileName: String { name.description }
    }

    /// L0 deltas to merge, oldest first; empty when below the threshold.
    static func l0ToMerge(_ layers: [Layer], threshold: Int) -> [Layer] {
        let l0 = layers.filter { $0.level == 0 && $0.name.kind == .delta }.sorted { $0.name.lsnStart < $1.name.lsnStart }
        return l0.count >= max(2, threshold) ? l0 : []
    }

    /// The oldest L0s (from `l0ToMerge`) for one merge step: their sizes
    /// together within `batchBytes`, and the most their merge writes
    /// (`mergeBound`) within `room`, the free space compaction may use. At
    /// least two layers, or none when even the two oldest do not fit.
    /// Why the bound and not the inputs' size: a step planned by its inputs
    /// could outgrow the room as it wrote, be stopped, and be planned the
    /// same way again, where a smaller step would fit.
    static func l0Batch(_ l0: [Layer], batchBytes: Int, room: Int, targetBytes: Int) -> [Layer] {
        var total = 0
        var batch: [Layer] = []
        for layer in l0 {
            guard total + layer.size <= batchBytes, mergeBound(total + layer.size, targetBytes: targetBytes) <= room else { break }
            total += layer.size
            batch.append(layer)
        }
        return batch.count >= 2 ? batch : []
    }

    /// The most a merge of input layers of `bytes` in all writes. A value
    /// takes up to a quarter more in the output than in its input: an image
    /// the merged order puts where it must be padded to a block
    /// (`LayerWriter.diskBound`: its encoded size, 44 and 2,048, against at
    /// least its encoded size and a 42-byte index entry in the input, 1.249
    /// times). Every output file, one for each `targetBytes` written and
    /// the last, adds its end.
    static func mergeBound(_ bytes: Int, targetBytes: Int) -> Int {
        bytes + bytes / 4 + DiskBudget.layerFileEnd * (bytes / max(1, targetBytes) + 1)
    }

    /// The LSN of the newest image set, if any.
    static func newestImageLsn(_ layers: [Layer]) -> Lsn? {
        layers.filter { $0.name.kind == .image }.map(\.name.lsnStart).max()
    }

    /// The LSN to write images at, or nil: only when at least `threshold` delta
    /// runs (distinct LSN ranges) sit above the newest image, or `force`; never
    /// at an LSN that already has images (that name would be taken).
    static func imageLsn(_ layers: [Layer], diskConsistentLsn: Lsn, threshold: Int, force: Bool) -> Lsn? {
        guard diskConsistentLsn > .zero else { return nil }
        let newest = newestImageLsn(layers)
        if let newest, newest >= diskConsistentLsn { return nil }
        let deltaRuns = Set(layers.filter { $0.name.kind == .delta && $0.name.lsnEnd > (newest ?? .zero) }
            .map { [$0.name.lsnStart.rawValue, $0.name.lsnEnd.rawValue] })
        guard !deltaRuns.isEmpty, force || deltaRuns.count >= threshold else { return nil }
        return diskConsistentLsn
    }

    /// The LSN of an image set that would let GC remove layers now: the GC
    /// cutoff itself, when layers end between the newest image set at or
    /// below it and it. Images are otherwise written at the newest LSN, above
    /// the cutoff, and only become GC's base once ingest moves the cutoff past
    /// them; on a disk too full to ingest, that never happens (the wedge this
    /// avoids). Nil when GC has nothing such images would free.
    static func gcImageLsn(_ layers: [Layer], cutoff: Lsn) -> Lsn? {
        guard cutoff > .zero else { return nil }
        let base = layers.filter { $0.name.kind == .image && $0.name.lsnStart <= cutoff }.map(\.name.lsnStart).max() ?? .zero
        guard base < cutoff else { return nil }
        let freed = layers.contains { l in
            l.name.kind == .image ? l.name.lsnStart < cutoff && l.name.lsnStart >= base : l.name.lsnEnd <= cutoff && l.name.lsnEnd > base
        }
        return freed ? cutoff : nil
    }

    /// GC: the new cutoff and the layers no read at or above it can need. An
    /// image set at L ≤ cutoff holds every page as of L, so deltas ending at or
    /// below L and older images are garbage.
    /// The GC cutoff: `horizon` below last_record_lsn, never lower than it was.
    static func cutoff(lastRecordLsn: Lsn, horizon: UInt64, currentCutoff: Lsn) -> Lsn {
        max(currentCutoff, Lsn(lastRecordLsn.rawValue > horizon ? lastRecordLsn.rawValue - horizon : 0))
    }

    static func garbage(_ layers: [Layer], lastRecordLsn: Lsn, horizon: UInt64, currentCutoff: Lsn)
        -> (cutoff: Lsn, remove: [Layer])
    {
        let cutoff = cutoff(lastRecordLsn: lastRecordLsn, horizon: horizon, currentCutoff: currentCutoff)
        guard let base = layers.filter({ $0.name.kind == .image && $0.name.lsnStart <= cutoff }).map(\.name.lsnStart).max()
        else { return (cutoff, []) }
        let remove = layers.filter { l in
            l.name.kind == .image ? l.name.lsnStart < base : l.name.lsnEnd <= base
        }
        return (cutoff, remove)
    }
}
