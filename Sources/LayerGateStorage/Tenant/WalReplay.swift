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
/// logged at error level by the tenant and counted in its status.
enum WalReplay {
    struct Segment: Equatable {
        var start: Lsn
        var name: String
        var legacy: Bool
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
    }

    /// Replays `directory` (the tenant's wal/), cutting a torn tail of the newest
    /// segment on disk (truncate + fsync, or unlink when nothing of it verifies).
    static func replay(directory: DirectoryHandle, tenant: TenantId) throws(StorageError) -> Result {
        let fs = directory.fs
        var out = Result()
        let names = try Directory.list(fs, directory.path)
        for name in names where name.hasSuffix("___temp") { try Directory.unlink(fs, directory.child(name)) }
        let segs: [(Lsn, String)] = names.compactMap { n in
            guard n.hasSuffix(".wal"), let v = Hex.parseUInt64(n.dropLast(4), digits: 16) else { return nil }
            return (Lsn(v), n)
        }.sorted { $0.0 < $1.0 }
        var lastLsn = Lsn.zero
        var previous: Segment?
        for (i, (start, name)) in segs.enumerated() {
            let isLast = i == segs.count - 1
            let path = directory.child(name)
            let file = try RawFile.open(fs, path, isLast ? .readWrite : .readOnly)
            let bytes = try file.readAll()
            var scan = SegmentScan(path: path, start: start, tenant: tenant, isLast: isLast, previous: previous,
                                   lastLsn: lastLsn)
            var failure: StorageError?
            bytes.withUnsafeBytes { b in
                do throws(StorageError) { try scan.run(b) } catch { failure = error }
            }
            if let failure { throw failure }
            out.records += scan.records
            lastLsn = scan.lastLsn
            if let cutAt = scan.cutAt, !scan.sealed {
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
            let segment = Segment(start: start, name: name, legacy: scan.legacy)
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

/// The scan of one segment's bytes.
private struct SegmentScan {
    let path: String
    let start: Lsn
    let tenant: TenantId
    let isLast: Bool
    let previous: WalReplay.Segment?
    /// Across segments: LSNs never go backwards.
    var lastLsn: Lsn
    var lastLsnInSegment = Lsn.zero
    var records: [Record] = []
    var cutAt: Int?
    var sealed = false
    var legacy = false
    var nextSequence: UInt64 = 1

    init(path: String, start: Lsn, tenant: TenantId, isLast: Bool, previous: WalReplay.Segment?, lastLsn: Lsn) {
        self.path = path
        self.start = start
        self.tenant = tenant
        self.isLast = isLast
        self.previous = previous
        self.lastLsn = lastLsn
    }

    private func corrupt(_ reason: String) -> StorageError { .corruptWal(file: path, reason: reason) }

    mutating func run(_ b: UnsafeRawBufferPointer) throws(StorageError) {
        if b.isEmpty {
            guard isLast else { throw corrupt("the segment is empty but newer segments exist") }
            cutAt = 0
            return
        }
        if b.count >= 4 && UInt32(bigEndian: b.loadUnaligned(as: UInt32.self)) == WalFormat.magic {
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
        guard header.startLsn == start else { throw corrupt("header says it starts at LSN \(header.startLsn)") }
        if let previous, !previous.legacy, header.previousStart != previous.start {
            throw corrupt("follows the segment starting at \(header.previousStart), but the one before it on disk starts at \(previous.start): a segment is missing")
        }
        var pos = first.end
        while pos < b.count {
            guard let f = WalFormat.frame(in: b, at: pos), f.sequence == nextSequence, f.kind != .segmentHeader else {
                try damaged(b, at: pos, what: "commit \(nextSequence)")
                return
            }
            let payload = UnsafeRawBufferPointer(rebasing: b[f.payload])
            if f.kind == .seal {
                guard let seal = WalFormat.decodeSeal(payload), seal.offset == UInt64(pos),
                      seal.commits == nextSequence - 1, seal.lastLsn == lastLsnInSegment
                else { throw corrupt("the seal at offset \(pos) does not match the segment") }
                // Nothing is written after a seal; zeros there (a file extended by
                // something else) hold no record and are dropped.
                let after = UnsafeRawBufferPointer(rebasing: b[f.end...])
                guard after.allSatisfy({ $0 == 0 }) else { throw corrupt("\(after.count) bytes follow the seal") }
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
                guard r.lsn >= lastLsn else { throw corrupt("LSN goes backwards at offset \(pos) (\(r.lsn) after \(lastLsn))") }
                lastLsn = r.lsn
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
        var probe = pos + 8
        while probe + WalFormat.frameHeaderSize <= b.count {
            if let f = WalFormat.frame(in: b, at: probe), f.kind != .segmentHeader, f.sequence >= nextSequence {
                throw corrupt("\(what) at offset \(pos) is damaged, but a later frame (sequence \(f.sequence), offset \(probe)) was written after it had been fsynced")
            }
            probe += 8
        }
        guard isLast else { throw corrupt("\(what) at offset \(pos) is damaged and newer segments exist") }
        cutAt = pos
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
            guard Lsn(lsn) >= lastLsn else { throw corrupt("LSN goes backwards at offset \(pos)") }
            lastLsn = Lsn(lsn)
            lastLsnInSegment = lastLsn
            records.append(Record(key: key, lsn: Lsn(lsn), value: value))
            pos += end
        }
    }
}
