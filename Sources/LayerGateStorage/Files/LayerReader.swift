#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// An open, validated, read-only layer file.
///
/// The file is opened O_RDONLY and never written. Every offset it follows
/// comes from this file's own summary or index and is bounds-checked against
/// the summary first; every index block is checksummed when it enters the
/// cache and every value when it is read, so damage is an error naming
/// the file, never wrong bytes.
///
/// A removed layer (compaction, GC) is marked with `deleteWhenUnused()`: the
/// file is unlinked when the last reference — the layer map's or an in-flight
/// read's — goes away.
public final class LayerReader: Sendable {
    public let descriptor: LayerDescriptor
    /// Relative to the data directory.
    public let path: String
    /// Process-wide unique id of this open file: the page cache key. It is the
    /// virtual file's id, so it survives the descriptor being closed and reopened.
    public var fileId: UInt64 { file.id }
    let summary: LayerSummary
    private let file: VirtualFile
    private let fences: [UInt8]
    private let cache: PageCache
    private let deleteOnDeinit = Atomic<Bool>(false)

    /// Opens and validates `directory/name`. `expectedSize` (from the index) must match.
    init(directory: DirectoryHandle, name: LayerName, tenant: TenantId, cache: PageCache, openFiles: OpenFileTable,
         expectedSize: Int? = nil) throws(StorageError)
    {
        path = directory.child(name.description)
        let file = try VirtualFile(table: openFiles, path: path)
        self.file = file
        let size = file.identity.size
        guard file.identity.isRegularFile else { throw .corruptLayer(file: path, reason: "not a regular file") }
        if let expectedSize, expectedSize != size {
            throw .corruptLayer(file: path, reason: "size is \(size) bytes, the index says \(expectedSize)")
        }
        guard size >= 2 * LayerFormat.blockSize, size % LayerFormat.blockSize == 0 else {
            throw .corruptLayer(file: path, reason: "size \(size) is not a whole number of 8 KiB blocks (truncated?)")
        }
        let block0 = try file.read(count: LayerFormat.blockSize, at: 0)
        let summary: LayerSummary
        switch block0.withUnsafeBytes({ LayerSummary.decode($0) }) {
        case .success(let s): summary = s
        case .failure(let problem): throw .corruptLayer(file: path, reason: problem.reason)
        }
        if let problem = summary.problem(fileSize: size) { throw .corruptLayer(file: path, reason: problem) }
        guard summary.kind == name.kind, summary.keys == name.keys, summary.lsnStart == name.lsnStart,
              summary.lsnEnd == name.lsnEnd
        else { throw .corruptLayer(file: path, reason: "summary does not match the file name") }
        guard summary.tenant == tenant else {
            throw .corruptLayer(file: path, reason: "belongs to tenant \(summary.tenant), not \(tenant)")
        }
        // Fences: one per index block, read once at open (a few bytes per 200 values).
        // `problem(fileSize:)` bounded both block numbers by the file's size.
        let fenceArea = try file.read(count: Int(summary.fenceBlockCount) * LayerFormat.blockSize,
                                      at: Int(summary.fenceStartBlock) * LayerFormat.blockSize)
        switch fenceArea.withUnsafeBytes({ FenceArea.decode($0, indexBlocks: summary.indexBlockCount) }) {
        case .success(let f): fences = f
        case .failure(let problem): throw .corruptLayer(file: path, reason: problem.reason)
        }
        self.summary = summary
        self.cache = cache
        descriptor = LayerDescriptor(name: name, size: size)
    }

    deinit {
        cache.dropFile(fileId)
        if deleteOnDeinit.load(ordering: .acquiring) {
            // Only unlink the name if it is still this file (never someone else's).
            _ = try? file.fs.unlink(path, ifItIs: file.identity)
        }
    }

    public func deleteWhenUnused() { deleteOnDeinit.store(true, ordering: .releasing) }

    /// Removes the file's name now (its layer is safe in remote storage),
    /// while reads that hold this reader go on through a descriptor of its
    /// own. False, with the file left as it was, when that cannot be done.
    func removeName() -> Bool {
        guard file.keepOpenWithoutName() else { return false }
        return (try? file.fs.unlink(path, ifItIs: file.identity)) == true
    }

    /// Runs `body` over block `n` through the page cache.
    private func withBlock<R>(_ n: UInt64, isIndex: Bool, policy: ReadPolicy,
                              _ body: (UnsafeRawBufferPointer) throws(ReadFailure) -> R) throws(ReadFailure) -> R
    {
        guard policy == .withoutWaiting else {
            return try cache.withBlock(file: fileId, block: n, load: { buf throws(ReadFailure) in
                try load(n, into: buf, isIndex: isIndex, policy: policy)
            }, body: body)
        }
        if let r = try cache.withCachedBlock(file: fileId, block: n, body: body) { return r }
        // Counted as a miss only once loaded: a block that needs the disk is counted by the read thread that reads it.
        return try cache.withRun(file: fileId, blocks: n..<n + 1, source: .osCache, load: { buf throws(ReadFailure) in
            try load(n, into: buf, isIndex: isIndex, policy: policy)
        }, body: body)
    }

    /// Reads the blocks from `first` into `buf` (whole blocks), as `policy`
    /// allows: `.withoutWaiting` only from the OS page cache. Checks an index block.
    private func load(_ first: UInt64, into buf: UnsafeMutableRawBufferPointer, isIndex: Bool, policy: ReadPolicy) throws(ReadFailure) {
        let at = Int(first) * LayerFormat.blockSize
        if policy == .withoutWaiting {
            guard file.readIfResident(into: buf, at: at) else {
                throw .notCached(BlockMiss(reader: self, blocks: first..<first + UInt64(buf.count / LayerFormat.blockSize), isIndex: isIndex))
            }
        } else {
            try ReadFailure.lift { () throws(StorageError) in try file.read(into: buf, at: at) }
        }
        try check(UnsafeRawBufferPointer(buf), first: first, isIndex: isIndex)
    }

    /// What every load of blocks into the page cache checks: an index block's checksum and entries.
    private func check(_ buf: UnsafeRawBufferPointer, first: UInt64, isIndex: Bool) throws(ReadFailure) {
        if isIndex, let problem = IndexBlock.problem(buf, number: Int(first - summary.indexStartBlock), summary: summary, fences: fences) {
            throw .storage(.corruptLayer(file: path, reason: problem))
        }
    }

    /// Puts `bytes`, the blocks of `miss` read by someone else (the event
    /// loop's kernel reads), in the page cache, checked as a load here checks
    /// them. False when they are not what the file should hold there: the
    /// read is then made again the ordinary way, which says what is wrong.
    func install(_ miss: BlockMiss, from bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count == miss.byteCount else { return false }
        do throws(ReadFailure) {
            // Checked and installed where the kernel put them: the caller's buffer outlives both.
            try check(bytes, first: miss.blocks.lowerBound, isIndex: miss.isIndex)
        } catch {
            return false
        }
        cache.install(file: fileId, blocks: miss.blocks, from: bytes, source: .loopRead)
        return true
    }

    /// Runs `body` with an open direct descriptor of the file, held open until it returns (`VirtualFile`).
    func withOpenDirectDescriptor<R>(_ body: (Int32) -> R) -> R? { file.withOpenDirectDescriptor(body) }

    /// Compares the 25-byte (key, lsn) at `p` with `target`: byte order is key order.
    @inline(__always)
    private static func compare(_ p: UnsafeRawPointer, _ target: UnsafeRawPointer) -> Int32 {
        memcmp(p, target, LayerFormat.fenceSize)
    }

    /// Visits the entries for `key` with LSN ≤ `upTo`, newest first, until
    /// `visitor` returns false. Reads at most the index blocks those entries sit in.
    func visit(key: PageKey, upTo: Lsn, _ visitor: (IndexEntry) throws(StorageError) -> Bool) throws(StorageError) {
        try ReadFailure.onDisk { () throws(ReadFailure) in
            try visit(key: key, upTo: upTo, policy: .mayReadDisk) { e throws(ReadFailure) in try ReadFailure.lift { () throws(StorageError) in try visitor(e) } }
        }
    }

    /// The same, for the read path, reading blocks as `policy` allows.
    func visit(key: PageKey, upTo: Lsn, policy: ReadPolicy,
               _ visitor: (IndexEntry) throws(ReadFailure) -> Bool) throws(ReadFailure) {
        guard summary.keys.contains(key), upTo >= summary.lsnStart else { return }
        try withUnsafeTemporaryAllocation(byteCount: LayerFormat.fenceSize, alignment: 8) { target throws(ReadFailure) in
            Self.encodeTarget(key: key, lsn: upTo, into: target)
            let t = UnsafeRawPointer(target.baseAddress!)
            // Last index block whose first entry is ≤ target.
            let blockCount = fences.count / LayerFormat.fenceSize
            var lo = 0, hi = blockCount
            fences.withUnsafeBytes { f in
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if Self.compare(f.baseAddress! + mid * LayerFormat.fenceSize, t) <= 0 { lo = mid + 1 } else { hi = mid }
                }
            }
            var block = lo - 1
            guard block >= 0 else { return }
            var startAtEnd = false
            let version = summary.version
            while block >= 0 {
                let keepGoing = try withBlock(summary.indexStartBlock + UInt64(block), isIndex: true, policy: policy) {
                    buf throws(ReadFailure) -> Bool in
                    let count = IndexBlock.count(buf)
                    var j: Int
                    if startAtEnd {
                        j = count - 1
                    } else {
                        var lo = 0, hi = count
                        while lo < hi {
                            let mid = (lo + hi) / 2
                            let p = buf.baseAddress! + version.entryOffset(mid)
                            if Self.compare(p, t) <= 0 { lo = mid + 1 } else { hi = mid }
                        }
                        j = lo - 1
                    }
                    while j >= 0 {
                        let p = buf.baseAddress! + version.entryOffset(j)
                        guard memcmp(p, t, PageKey.packedSize) == 0 else { return false }
                        let e = IndexEntry.read(buf, at: version.entryOffset(j), version: version)
                        guard try visitor(e) else { return false }
                        j -= 1
                    }
                    return true
                }
                guard keepGoing else { return }
                block -= 1
                startAtEnd = true
            }
        }
    }

    private static func encodeTarget(key: PageKey, lsn: Lsn, into buf: UnsafeMutableRawBufferPointer) {
        var i = 0
        func put(_ v: UInt64, _ n: Int) {
            for s in stride(from: (n - 1) * 8, through: 0, by: -8) {
                buf[i] = UInt8(truncatingIfNeeded: v >> UInt64(s))
                i += 1
            }
        }
        put(UInt64(key.spcOid), 4); put(UInt64(key.dbOid), 4); put(UInt64(key.relNumber), 4)
        put(UInt64(key.fork), 1); put(UInt64(key.block), 4); put(lsn.rawValue, 8)
    }

    /// The payload size of `entry` once its offset and length are checked
    /// against this file's data area (an index entry is untrusted input).
    func payloadLength(of entry: IndexEntry) throws(StorageError) -> Int {
        let bs = UInt64(LayerFormat.blockSize)
        let header = UInt64(summary.version.blobHeaderSize)
        let (end, overflow) = entry.offset.addingReportingOverflow(UInt64(entry.length))
        // Not empty: an empty value at the data area's end would name the first
        // index block as its block, which would then enter the cache as data, unchecked.
        guard entry.offset >= bs, entry.length >= UInt32(max(header, 1)), !overflow,
              end <= summary.dataEnd, entry.offset % bs <= bs - header
        else { throw .corruptLayer(file: path, reason: "index entry at \(entry.lsn) points outside the data area") }
        return Int(UInt64(entry.length) - header)
    }

    /// The payload size of `entry`, checked as `payloadLength(of:)` does and against `dest`, which it must fill.
    private func payloadLength(of entry: IndexEntry, filling dest: UnsafeMutableRawBufferPointer) throws(StorageError) -> Int {
        let length = try payloadLength(of: entry)
        guard length == dest.count else {
            throw .corruptLayer(file: path, reason: "value of \(entry.key) at \(entry.lsn) has an unexpected length")
        }
        return length
    }

    /// Copies the payload of `entry` into `dest` (exactly the payload size),
    /// verifying bounds, length and checksum.
    func readPayload(_ entry: IndexEntry, into dest: UnsafeMutableRawBufferPointer) throws(StorageError) {
        try ReadFailure.onDisk { () throws(ReadFailure) in try readPayload(entry, into: dest, policy: .mayReadDisk) }
    }

    /// The same, for the read path, reading blocks as `policy` allows.
    func readPayload(_ entry: IndexEntry, into dest: UnsafeMutableRawBufferPointer, policy: ReadPolicy) throws(ReadFailure) {
        let payloadLength = try ReadFailure.lift { () throws(StorageError) -> Int in try self.payloadLength(of: entry, filling: dest) }
        let blocks = self.blocks(of: entry)
        let runnable = blocks.count > 1 && blocks.count <= Self.maxRunBlocks
        if policy == .withoutWaiting {
            // Block by block, cached ones first (a hit takes no other lock). A first block
            // not cached (nothing counted yet) makes it one run read below instead.
            var readAsRun = false
            do throws(ReadFailure) {
                return try copyPayload(entry, length: payloadLength, into: dest) { n, visit throws(ReadFailure) in
                    guard runnable, n == blocks.lowerBound else { return try withBlock(n, isIndex: false, policy: policy, visit) }
                    readAsRun = try cache.withCachedBlock(file: fileId, block: n, body: visit) == nil
                    if readAsRun { throw .notCached(nil) }
                }
            } catch {
                guard case .notCached = error, readAsRun else { throw error }
            }
        }
        // A value over a few blocks, none cached yet (a delta's, a version 1 image, or an image packed after a delta): one read for all.
        if runnable, policy == .withoutWaiting || !cache.contains(file: fileId, block: blocks.lowerBound) {
            try cache.withRun(file: fileId, blocks: blocks, source: policy == .withoutWaiting ? .osCache : .readThread,
                              load: { run throws(ReadFailure) in try load(blocks.lowerBound, into: run, isIndex: false, policy: policy) },
                              body: { run throws(ReadFailure) in
                                  try copyPayload(entry, length: payloadLength, into: dest) { n, visit throws(ReadFailure) in
                                      let at = Int(n - blocks.lowerBound) * LayerFormat.blockSize
                                      try visit(UnsafeRawBufferPointer(rebasing: run[at..<at + LayerFormat.blockSize]))
                                  }
                              })
            return
        }
        try copyPayload(entry, length: payloadLength, into: dest) { n, visit throws(ReadFailure) in
            try withBlock(n, isIndex: false, policy: policy, visit)
        }
    }

    /// The longest run of blocks read at once for one value (a delta's patches can outgrow a page).
    static let maxRunBlocks = 4

    /// The blocks `entry`'s value lies in; `payloadLength(of:)` checked it first.
    func blocks(of entry: IndexEntry) -> Range<UInt64> {
        let bs = UInt64(LayerFormat.blockSize)
        return entry.offset / bs..<(entry.offset + UInt64(entry.length) - 1) / bs + 1
    }

    /// The blocks holding values: a scan reads no further.
    var dataBlocks: Range<UInt64> {
        let bs = UInt64(LayerFormat.blockSize)
        return 1..<(summary.dataEnd + bs - 1) / bs
    }

    /// Reads `blocks` (within `dataBlocks`) into `buffer`, past the page cache:
    /// for a scan (`LayerScan`), whose blocks nobody else reads soon.
    func readBlocks(_ blocks: Range<UInt64>, into buffer: UnsafeMutableRawBufferPointer) throws(StorageError) {
        precondition(blocks.lowerBound >= dataBlocks.lowerBound && blocks.upperBound <= dataBlocks.upperBound
            && buffer.count == blocks.count * LayerFormat.blockSize, "a scan read outside the data area")
        try file.read(into: buffer, at: Int(blocks.lowerBound) * LayerFormat.blockSize)
    }

    /// Copies the payload of `entry` out of `window`, this file's blocks from
    /// `first` read by `readBlocks`, which must hold all of `blocks(of: entry)`;
    /// checked as a read through the page cache is.
    func readPayload(_ entry: IndexEntry, into dest: UnsafeMutableRawBufferPointer,
                     window: UnsafeRawBufferPointer, first: UInt64) throws(StorageError) {
        let payloadLength = try self.payloadLength(of: entry, filling: dest)
        try ReadFailure.onDisk { () throws(ReadFailure) in
            try copyPayload(entry, length: payloadLength, into: dest) { n, visit throws(ReadFailure) in
                let at = Int(n - first) * LayerFormat.blockSize
                precondition(n >= first && at + LayerFormat.blockSize <= window.count, "a value outside the scan's window")
                try visit(UnsafeRawBufferPointer(rebasing: window[at..<at + LayerFormat.blockSize]))
            }
        }
    }

    /// Copies the value of `entry` block by block, from `block(n, visit)`, and
    /// checks its checksum (version 2: the entry's; version 1: its blob header's, with the length there).
    private func copyPayload(
        _ entry: IndexEntry, length payloadLength: Int, into dest: UnsafeMutableRawBufferPointer,
        block: (UInt64, (UnsafeRawBufferPointer) throws(ReadFailure) -> Void) throws(ReadFailure) -> Void
    ) throws(ReadFailure) {
        let bs = UInt64(LayerFormat.blockSize)
        let version = summary.version
        // A version 1 header and the first part of the payload share a block: one visit.
        // A header that ends exactly at the block's end has its payload in the next block.
        var pos = entry.offset + UInt64(version.blobHeaderSize)
        let firstInBlock = Int(entry.offset % bs) + version.blobHeaderSize
        let firstPart = min(LayerFormat.blockSize - firstInBlock, payloadLength)
        let path = self.path
        var storedCrc = entry.crc
        try block(entry.offset / bs) { buf throws(ReadFailure) in
            if version == .v1 {
                let header = BlobHeader.decode(buf, at: Int(entry.offset % bs))
                guard Int(header.length) == payloadLength else {
                    throw .storage(.corruptLayer(
                        file: path, reason: "blob at offset \(entry.offset) has length \(header.length), index says \(payloadLength)"))
                }
                storedCrc = header.crc
            }
            let src = UnsafeRawBufferPointer(rebasing: buf[firstInBlock..<firstInBlock + firstPart])
            if firstPart > 0 { dest.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: firstPart) }
        }
        var copied = firstPart
        pos += UInt64(firstPart)
        while copied < payloadLength {
            let inBlock = Int(pos % bs)
            let n = min(LayerFormat.blockSize - inBlock, payloadLength - copied)
            try block(pos / bs) { buf throws(ReadFailure) in
                let src = UnsafeRawBufferPointer(rebasing: buf[inBlock..<inBlock + n])
                (dest.baseAddress! + copied).copyMemory(from: src.baseAddress!, byteCount: n)
            }
            copied += n
            pos += UInt64(n)
        }
        // One pass over the whole copied payload (contiguous, so the CRC runs its lanes side by side).
        guard Checksum.crc32c(UnsafeRawBufferPointer(dest)) == storedCrc else {
            throw .storage(.corruptLayer(file: path, reason: "checksum mismatch in the value of \(entry.key) at \(entry.lsn)"))
        }
    }

    var indexBlockCount: Int { Int(summary.indexBlockCount) }

    /// The entries of one index block, in order: compaction reads a layer block by block.
    func indexEntries(block b: Int) throws(StorageError) -> [IndexEntry] {
        try ReadFailure.onDisk { () throws(ReadFailure) in
            try withBlock(summary.indexStartBlock + UInt64(b), isIndex: true, policy: .mayReadDisk) { buf in
                let count = IndexBlock.count(buf), version = summary.version
                return (0..<count).map { IndexEntry.read(buf, at: version.entryOffset($0), version: version) }
            }
        }
    }

    /// Every entry in file order; for compaction and checks, not the read path.
    func allEntries() throws(StorageError) -> [IndexEntry] {
        var out: [IndexEntry] = []
        out.reserveCapacity(Int(summary.valueCount))
        for b in 0..<indexBlockCount { out += try indexEntries(block: b) }
        return out
    }

    /// Reads a whole value back as a `RecordValue`.
    func value(of entry: IndexEntry) throws(StorageError) -> RecordValue {
        try value(of: entry) { buf throws(StorageError) in try readPayload(entry, into: buf) }
    }

    /// A whole value as a `RecordValue`, its payload copied by `read` (one of the `readPayload`s).
    func value(of entry: IndexEntry, read: (UnsafeMutableRawBufferPointer) throws(StorageError) -> Void) throws(StorageError) -> RecordValue {
        var bytes = [UInt8](repeating: 0, count: try payloadLength(of: entry))
        var failure: StorageError?
        bytes.withUnsafeMutableBytes { buf in
            do throws(StorageError) { try read(buf) } catch { failure = error }
        }
        if let failure { throw failure }
        if entry.isImage {
            guard bytes.count == pageSize else { throw .corruptLayer(file: path, reason: "image of \(bytes.count) bytes") }
            return .image(bytes)
        }
        guard let v = bytes.withUnsafeBytes({ ValueCodec.decode($0) }) else {
            throw .corruptLayer(file: path, reason: "undecodable delta for \(entry.key) at \(entry.lsn)")
        }
        return v
    }
}
