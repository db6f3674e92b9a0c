import Synchronization

/// A file written only at its end, each append in one write, past the OS
/// page cache where the filesystem allows it: a WAL segment.
///
/// Why: every WAL commit is fsynced as soon as it is written. Through the
/// page cache, that fsync paid for delayed allocation and write-back of a
/// growing file: on our VMs 1.4 ms for a 512 KiB commit, 0.5 ms written
/// directly, and those fsyncs were what bounded ingest.
///
/// A direct write covers whole aligned blocks, so each append writes the
/// file's partial last block again (kept here, the same bytes the file
/// holds), then the new bytes, then padding (the caller's) to the next block
/// boundary, which the next append overwrites. Writing the same bytes again cannot tear them:
/// whatever a crash leaves of each sector, old or new, is the same there.
/// So a reader finds padding after the last append, up to a block boundary.
final class AppendOnlyFile: @unchecked Sendable {
    // @unchecked: one writer at a time (a tenant's commit leader), and the
    // file is closed after its last append.
    let file: RawFile
    private let writes: DirectWrites
    /// The bytes the file holds: the next append goes here.
    private(set) var end: Int
    /// The file's partial last block, `end % directIOAlignment` bytes.
    private var tail: [UInt8]
    /// `end` and `tail` before the last append, which `cutBack` may undo.
    private var beforeLast: (end: Int, tail: [UInt8])?

    /// `file` holds `end` bytes (0: new); its partial last block is read back.
    init(file: RawFile, end: Int) throws(StorageError) {
        self.file = file
        self.end = end
        tail = try file.read(count: end % directIOAlignment, at: end - end % directIOAlignment)
        // After the read: a direct read of a partial block would be refused.
        writes = DirectWrites(file: file)
    }

    /// Writes `count` bytes, filled by `fill`, at `end` (not synced); a
    /// direct write is padded to the block boundary with `padding` repeated.
    /// On a failure `end` stays, and the caller cuts the file back to it (`cutBack`).
    func append(_ count: Int, padding: [UInt8],
                _ fill: (UnsafeMutableRawBufferPointer) -> Void) throws(StorageError) {
        let buffer = AppendBuffers.take()
        defer { AppendBuffers.give(buffer) }
        let base = end - tail.count
        buffer.append(tail)
        buffer.append(count, fill)
        if writes.active {
            buffer.append((directIOAlignment - buffer.count % directIOAlignment) % directIOAlignment) { out in
                for i in 0..<out.count { out[i] = padding[i % padding.count] }
            }
            try buffer.withBytes(0..<buffer.count) { bytes throws(StorageError) in try writes.write(bytes, at: base) }
            // Refused directly (a device whose sectors are larger than the alignment), the
            // same bytes went through the page cache: from now on nothing overwrites the
            // padding, which a shorter frame (a seal) would leave behind it. It goes.
            if !writes.active, base + buffer.count > end + count { try file.truncate(to: end + count) }
        } else {
            try buffer.withBytes(tail.count..<tail.count + count) { bytes throws(StorageError) in
                try writes.write(bytes, at: end)
            }
        }
        let newEnd = end + count
        beforeLast = (end, tail)
        tail = buffer.withBytes(newEnd - newEnd % directIOAlignment - base..<newEnd - base) { Array($0) }
        end = newEnd
    }

    /// Cuts the file back to `offset`: its `end` now, or before the last
    /// append (one that was not synced). The caller fsyncs.
    func cutBack(to offset: Int) throws(StorageError) {
        try file.truncate(to: offset)
        if offset == end { return }
        guard let previous = beforeLast, previous.end == offset else {
            preconditionFailure("cutting back to \(offset), not where the last append started")
        }
        (end, tail) = previous
        beforeLast = nil
    }
}

/// The large aligned buffers appends are put together in, shared by every
/// file: a commit holds one only while it writes, so a few serve all
/// tenants, and their pages stay mapped from one commit to the next
/// (faulting in fresh memory for each commit cost about as much CPU as
/// copying the commit into it).
private enum AppendBuffers {
    private static let idle = Mutex<[AlignedBuffer]>([])
    /// Buffers kept between commits, and the memory each keeps: beyond
    /// them a commit's buffer is given back to the system.
    private static let kept = 4
    private static let keptCapacity = 16 << 20

    static func take() -> AlignedBuffer { idle.withLock { $0.popLast() } ?? AlignedBuffer(capacity: 1 << 20) }

    static func give(_ buffer: AlignedBuffer) {
        buffer.removeLast(buffer.count)
        buffer.shrink(toCapacity: keptCapacity)
        idle.withLock { if $0.count < kept { $0.append(buffer) } }
    }
}
