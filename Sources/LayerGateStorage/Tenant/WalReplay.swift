#if canImport(Glibc)
import Glibc
#endif

/// Reading a tenant's WAL back at load: every segment in LSN order, with the
/// rules that tell a torn tail (cut it) from damage to fsynced data (stop).
///
/// What is detected as corruption (the tenant is broken, nothing is served
/// from a guess):
/// - any damaged frame that has a verified later frame in its segment (it
///   was fsynced before that one was written);
/// - any damage in a sealed segment, and a segment other than the newest that
///   has no seal (segments are sealed when the WAL rolls and when it closes
///   cleanly);
/// - bytes after a seal, a seal that does not sit where it says, a segment
///   whose header names another tenant or LSN, a broken chain (a segment that
///   does not name the one before it), a record that does not decode, LSNs
///   going backwards.
///
/// What cannot be told from a torn write, and is cut: damage confined to the
/// newest commit of the newest segment, after a stop that did not seal it.
/// A crash during that commit's write is the normal cause; bit rot of that one
/// commit after its fsync looks the same. The cut is reported (`TailCut`),
/// logged at error level by the tenant and counted in its status. Block
/// padding after the newest commit, ending on the next block boundary, is not
/// damage: a direct write ends so (`AppendOnlyFile`, `WalFormat`). It is cut
/// without a report. Zeros there are not padding: a commit zeroed after its
/// fsync is cut and reported like any other damage.
enum WalReplay {
    struct Segment: Equatable {
        var start: Lsn
        var name: String
        var legacy: Bool
        /// The last record LSN it holds (0: none).
        var lastLsn: Lsn = .zero
    }

    /// The newest segment, when it was not sealed: the writer seals it before
    /// it starts the next one.
    struct OpenTail: Equatable {
        var segment: Segment
        var size: Int
        var nextSequence: UInt64
        var lastLsn: Lsn
    }

    struct TailCut: Equatable, Sendable, CustomStringConvertible {
        var segment: String
        var offset: Int
        var bytes: Int
        /// The last LSN kept before the cut (0: none in that segment).
        var lastLsnKept: Lsn

        var description: String {
            "cut \(bytes) unverified bytes at offset \(offset) of WAL segment \(segment) (records up to LSN \(lastLsnKept) kept)"
        }
    }

    struct Result {
        var records: [Record] = []
        var segments: [Segment] = []
        var tail: OpenTail?
        var cut: TailCut?
        /// The oldest segment on disk names one before it that is gone:
        /// that one's last LSN, which the layers must reach.
        var deletedPredecessorLastLsn: Lsn?
        var oldestSegmentPath: String?
    }

    /// Replays `directory` (the tenant's wal/), cutting a torn tail of the newest
    /// segment on disk (truncate + fsync, or unlink when nothing of it verifies).
    static func replay(directory: DirectoryHandle, tenant: TenantId, maxSegmentBytes: Int) throws(StorageError) -> Result {
        let fs = directory.fs
        var out = Result()
        let names = try Directory.list(fs, directory.path)
        // Temp files are not segments; the load's sweep removes them once it is safe to.
        let segs: [(Lsn, String)] = names.compactMap { n in
            guard n.hasSuffix(".wal"), let v = Hex.parseUInt64(n.dropLast(4), digits: 16) else { return nil }
            return (Lsn(v), n)
        }.sorted { $0.0 < $1.0 }
        var order = RecordOrder()
        var previous: Segment?
        for (i, (start, name)) in segs.enumerated() {
            let isLast = i == segs.count - 1
            let path = directory.child(name)
            let file = try RawFile.open(fs, path, isLast ? .readWrite : .readOnly)
            let bytes: [UInt8]
            do throws(StorageError) { bytes = try file.readAll(limit: maxSegmentBytes) } catch {
                if case .io(_, _, let e) = error, e == EFBIG || e == EINVAL { throw .corruptWal(file: path, reason: "\(error)") }
                throw error
            }
            var scan = SegmentScan(path: path, start: start, tenant: tenant, isLast: isLast, previous: previous,
                                   order: order)
            var failure: StorageError?
            bytes.withUnsafeBytes { b in
                do throws(StorageError) { try scan.run(b) } catch { failure = error }
            }
            if let failure { throw failure }
            out.records += scan.records
            order = scan.order
            // An empty newest segment (a kill between its create and its first write) loses nothing: no report.
            if let cutAt = scan.cutAt, !scan.sealed, !scan.cutIsPadding, bytes.count > cutAt {
                out.cut = TailCut(segment: name, offset: cutAt, bytes: bytes.count - cutAt, lastLsnKept: scan.lastLsnInSegment)
            }
            if isLast, !scan.sealed, scan.records.isEmpty {
                // No commit of the newest segment verifies (at most its header
                // does): it never held an acknowledged record, and its name must
                // be free for the commit that is written again.
                file.close()
                try Directory.unlink(fs, path)
                directory.sync()
                continue
            }
            if let cutAt = scan.cutAt {
                try file.truncate(to: cutAt)
                file.sync()
            }
            let segment = Segment(start: start, name: name, legacy: scan.legacy, lastLsn: scan.lastLsnInSegment)
            if out.segments.isEmpty, let header = scan.header, header.previousStart != .zero {
                out.deletedPredecessorLastLsn = header.previousLastLsn
                out.oldestSegmentPath = path
            }
            out.segments.append(segment)
            previous = segment
            if isLast && !scan.sealed && !scan.legacy {
                out.tail = OpenTail(segment: segment, size: scan.cutAt ?? bytes.count, nextSequence: scan.nextSequence,
                                    lastLsn: scan.lastLsnInSegment)
            }
        }
        return out
    }
}

extension WalReplay {
    /// Read-only: the last LSN of the segment before the oldest one on disk,
    /// if that segment names one (format 2) and it is gone.
    static func deletedPredecessorLastLsn(fs: any FileSystem, directory: String) throws(StorageError) -> Lsn? {
        let oldest = try Directory.list(fs, directory).filter {
            $0.hasSuffix(".wal") && Hex.parseUInt64($0.dropLast(4), digits: 16) != nil
        }.min()
        guard let oldest else { return nil }
        let file = try RawFile.open(fs, directory + "/" + oldest, .readOnly)
        let size = min(try file.size(), WalFormat.frameHeaderSize + WalFormat.headerPayloadSize)
        let bytes = try file.read(count: size, at: 0)
        return bytes.withUnsafeBytes { b -> Lsn? in
            guard let f = WalFormat.frame(in: b, at: 0), f.kind == .segmentHeader,
                  let h = WalFormat.decodeHeader(UnsafeRawBufferPointer(rebasing: b[f.payload])), h.previousStart != .zero
            else { return nil }
            return h.previousLastLsn
        }
    }
}

/// The scan of one segment's bytes.
private struct SegmentScan {
    let path: String
    let start: Lsn
    let tenant: TenantId
    let isLast: Bool
    let previous: WalReplay.Segment?
    /// Across segments: LSNs never go backwards, no (key, LSN) twice.
    var order: RecordOrder
    var lastLsnInSegment = Lsn.zero
    var records: [Record] = []
    var cutAt: Int?
    /// What is cut is the padding a direct write ends its last block with, not a torn commit.
    var cutIsPadding = false
    var sealed = false
    var legacy = false
    var nextSequence: UInt64 = 1
    var header: WalFormat.SegmentHeader?

    init(path: String, start: Lsn, tenant: TenantId, isLast: Bool, previous: WalReplay.Segment?, order: RecordOrder) {
        self.path = path
        self.start = start
        self.tenant = tenant
        self.isLast = isLast
        self.previous = previous
        self.order = order
    }

    private func corrupt(_ reason: String) -> StorageError { .corruptWal(file: path, reason: reason) }

    mutating func run(_ b: UnsafeRawBufferPointer) throws(StorageError) {
        if b.isEmpty {
            guard isLast else { throw corrupt("the segment is empty but newer segments exist") }
            cutAt = 0
            return
        }
        // Format 2 by its first frame's magic, or, when that is damaged, by any
        // verified frame after it: damage to the start of a segment is not a
        // format-1 segment's torn tail.
        let magic = b.count >= 4 && UInt32(bigEndian: b.loadUnaligned(as: UInt32.self)) == WalFormat.magic
        if magic || Self.laterFrame(in: b, after: 0, minSequence: 1) != nil {
            try runFrames(b)
        } else {
            legacy = true
            try runLegacy(b)
        }
    }

    private mutating func runFrames(_ b: UnsafeRawBufferPointer) throws(StorageError) {
        guard let first = WalFormat.frame(in: b, at: 0), first.kind == .segmentHeader, first.sequence == 0 else {
            try damaged(b, at: 0, what: "segment header")
            return
        }
        guard let header = WalFormat.decodeHeader(UnsafeRawBufferPointer(rebasing: b[first.payload])) else {
            throw corrupt("segment header of an unknown version")
        }
        guard header.tenant == tenant else { throw corrupt("belongs to tenant \(header.tenant)") }
        self.header = header
        guard header.startLsn == start else { throw corrupt("header says it starts at LSN \(header.startLsn)") }
        if let previous, !previous.legacy, header.previousStart != previous.start {
            throw corrupt("follows the segment starting at \(header.previousStart), but the one before it on disk starts at \(previous.start): a segment is missing")
        }
        var pos = first.end
        while pos < b.count {
            guard let f = WalFormat.frame(in: b, at: pos), f.sequence == nextSequence, f.kind != .segmentHeader else {
                if isLast && WalFormat.isBlockPadding(b, from: pos) {
                    cutAt = pos
                    cutIsPadding = true
                } else {
                    try damaged(b, at: pos, what: "commit \(nextSequence)")
                }
                return
            }
            let payload = UnsafeRawBufferPointer(rebasing: b[f.payload])
            if f.kind == .seal {
                guard let seal = WalFormat.decodeSeal(payload), seal.offset == UInt64(pos),
                      seal.commits == nextSequence - 1, seal.lastLsn == lastLsnInSegment
                else { throw corrupt("the seal at offset \(pos) does not match the segment") }
                // Nothing is written after a seal; zeros there (a seal's own padding,
                // or a file extended by something else) hold no record and are dropped,
                // and so is block padding: what an earlier commit's direct write that fell
                // back to the page cache left there (earlier builds left it).
                let after = UnsafeRawBufferPointer(rebasing: b[f.end...])
                guard after.allSatisfy({ $0 == 0 }) || WalFormat.isBlockPadding(b, from: f.end) else {
                    throw corrupt("\(after.count) bytes follow the seal")
                }
                if !after.isEmpty && isLast { cutAt = f.end }
                sealed = true
                return
            }
            guard let batch = WalFormat.decodeRecords(payload), let firstRecord = batch.first else {
                throw corrupt("commit \(f.sequence) at offset \(pos) verifies but its records do not decode")
            }
            if f.sequence == 1, firstRecord.lsn != start {
                throw corrupt("first record has LSN \(firstRecord.lsn), the segment's name says \(start)")
            }
            for r in batch {
                if let problem = order.accept(r) { throw corrupt("commit at offset \(pos): \(problem)") }
                lastLsnInSegment = r.lsn
            }
            records += batch
            nextSequence += 1
            pos = f.end
        }
        if !isLast { throw corrupt("the segment has no seal, but newer segments exist (it was cut short)") }
    }

    /// A frame at `pos` does not verify: corruption if anything durable comes
    /// after it, else the torn tail of the newest segment.
    private mutating func damaged(_ b: UnsafeRawBufferPointer, at pos: Int, what: String) throws(StorageError) {
        if let (offset, sequence) = Self.laterFrame(in: b, after: pos, minSequence: nextSequence) {
            throw corrupt("\(what) at offset \(pos) is damaged, but a later frame (sequence \(sequence), offset \(offset)) was written after it had been fsynced")
        }
        guard isLast else { throw corrupt("\(what) at offset \(pos) is damaged and newer segments exist") }
        cutAt = pos
    }

    /// The first verified commit or seal after `pos` with at least `minSequence`.
    static func laterFrame(in b: UnsafeRawBufferPointer, after pos: Int, minSequence: UInt64) -> (Int, UInt64)? {
        var probe = pos + 8
        while probe + WalFormat.frameHeaderSize <= b.count {
            if let f = WalFormat.frame(in: b, at: probe), f.kind != .segmentHeader, f.sequence >= minSequence {
                return (probe, f.sequence)
            }
            probe += 8
        }
        return nil
    }

    /// Format 1 (layergate 0.1): `[u32 length][u32 crc32c(payload)][payload]`
    /// per record, no header or seal. Read so an upgrade keeps its WAL; a torn
    /// tail (short, zeros, empty or bad last record) of the newest segment is cut.
    private mutating func runLegacy(_ b: UnsafeRawBufferPointer) throws(StorageError) {
        var pos = 0
        while pos < b.count {
            let rest = UnsafeRawBufferPointer(rebasing: b[pos...])
            var tornHere = rest.allSatisfy { $0 == 0 } || rest.count < 8
            var end = 0
            if !tornHere {
                let len = Int(UInt32(bigEndian: rest.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
                end = 8 + len
                tornHere = len == 0 || end > rest.count
            }
            if tornHere {
                guard isLast else { throw corrupt("format-1 record at offset \(pos) is torn in a sealed segment") }
                cutAt = pos
                return
            }
            let crc = UInt32(bigEndian: rest.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            let payload = UnsafeRawBufferPointer(rebasing: rest[8..<end])
            guard Checksum.crc32c(payload) == crc else {
                if isLast && end == rest.count { cutAt = pos; return }
                throw corrupt("format-1 record at offset \(pos): checksum mismatch with data after it")
            }
            var r = ByteReader(payload)
            guard let lsn = try? r.u64(), let key = try? PageKey.read(from: &r),
                  let value = ValueCodec.decode(UnsafeRawBufferPointer(rebasing: payload[r.offset...]))
            else { throw corrupt("undecodable format-1 record at offset \(pos)") }
            let record = Record(key: key, lsn: Lsn(lsn), value: value)
            if let problem = order.accept(record) { throw corrupt("format-1 record at offset \(pos): \(problem)") }
            lastLsnInSegment = record.lsn
            records.append(record)
            pos += end
        }
    }
}
