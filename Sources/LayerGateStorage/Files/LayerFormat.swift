#if canImport(Glibc)
import Glibc
#endif

/// The on-disk layout of a layer file. Every block is 8 KiB.
///
///     block 0          summary (fields below, CRC-32C over them)
///     blocks 1…        values (version 2): payloads, packed, an image at a block
///                      boundary where that costs little padding (`imageAlignmentSlack`)
///     index blocks     [u32 crc32c(rest of block)][u16 count][entry × count], entries
///                      sorted by (key, lsn): key 17, lsn 8, offset 8, length 4, flags 1,
///                      crc32c(payload) 4
///     fence blocks     [u32 crc32c][u32 count][(key 17, lsn 8) × count]: the first
///                      entry of each index block, so a lookup reads one index block
///
/// Version 1 (still read, no longer written) put each payload in a blob
/// `[u32 length][u32 crc32c(payload)][payload]` and had no CRC in its 38-byte
/// entries. Why version 2: an image and the header before it spanned two
/// blocks, so every cold GetPage read 16 KiB from the disk for 8; an image
/// whose CRC sits in the index (which stays cached) is one aligned block.
///
/// Image payloads are the 8192 page bytes; delta payloads are `ValueCodec`'s.
enum LayerFormat {
    static let blockSize = PageCache.blockSize
    static let magic: UInt64 = 0x4C47_4C41_5945_5231  // "LGLAYER1"
    static let indexHeaderSize = 6
    static let fenceSize = 25
    /// The most zero bytes the writer pads with to start an image at a block
    /// boundary (a quarter block): after a delta, an image that would need
    /// more is packed across two blocks instead, as version 1 packed them all.
    static let imageAlignmentSlack = blockSize / 4

    /// What differs between the versions: the entry, and where a value's checksum is.
    enum Version: UInt32, Sendable {
        case v1 = 1
        case v2 = 2

        /// What the writer writes.
        static let written = Version.v2

        var entrySize: Int { self == .v1 ? 38 : 42 }
        var entriesPerIndexBlock: Int { (LayerFormat.blockSize - LayerFormat.indexHeaderSize) / entrySize }
        /// Where entry `i` of an index block starts.
        func entryOffset(_ i: Int) -> Int { LayerFormat.indexHeaderSize + i * entrySize }
        /// The bytes before a payload: version 1's blob header, or none.
        var blobHeaderSize: Int { self == .v1 ? BlobHeader.size : 0 }
    }

    /// Index entry flags.
    static let flagBase: UInt8 = 1
    static let flagImage: UInt8 = 2
}

struct LayerFormatProblem: Error {
    var reason: String
}

struct LayerSummary: Equatable {
    var version = LayerFormat.Version.written
    var kind: LayerName.Kind
    var tenant: TenantId
    var keys: KeyRange
    var lsnStart: Lsn
    var lsnEnd: Lsn
    var valueCount: UInt64
    var dataEnd: UInt64
    var indexStartBlock: UInt64
    var indexBlockCount: UInt64
    var fenceStartBlock: UInt64
    var fenceBlockCount: UInt64
    var fileSize: UInt64

    func encode() -> [UInt8] {
        var w = ByteWriter(capacity: LayerFormat.blockSize)
        w.u64(LayerFormat.magic)
        w.u32(version.rawValue)
        w.u8(kind.rawValue)
        w.u64(tenant.high); w.u64(tenant.low)
        keys.first.write(to: &w); keys.last.write(to: &w)
        w.u64(lsnStart.rawValue); w.u64(lsnEnd.rawValue)
        w.u64(valueCount); w.u64(dataEnd)
        w.u64(indexStartBlock); w.u64(indexBlockCount)
        w.u64(fenceStartBlock); w.u64(fenceBlockCount)
        w.u64(fileSize)
        let crc = Checksum.crc32c(w.bytes)
        w.u32(crc)
        w.zeros(LayerFormat.blockSize - w.count)
        return w.bytes
    }

    /// Decodes and validates block 0; `reason` says what is wrong.
    static func decode(_ block: UnsafeRawBufferPointer) -> Result<LayerSummary, LayerFormatProblem> {
        var r = ByteReader(block)
        do throws(ByteReader.Underflow) {
            guard try r.u64() == LayerFormat.magic else { return .failure(LayerFormatProblem(reason: "bad magic (not a layer file)")) }
            let stored = try r.u32()
            guard let version = LayerFormat.Version(rawValue: stored) else {
                return .failure(LayerFormatProblem(reason: "unsupported format version \(stored)"))
            }
            guard let kind = LayerName.Kind(rawValue: try r.u8()) else { return .failure(LayerFormatProblem(reason: "unknown layer kind")) }
            let tenant = TenantId(high: try r.u64(), low: try r.u64())
            let keys = KeyRange(first: try PageKey.read(from: &r), last: try PageKey.read(from: &r))
            let s = LayerSummary(
                version: version, kind: kind, tenant: tenant, keys: keys, lsnStart: Lsn(try r.u64()), lsnEnd: Lsn(try r.u64()),
                valueCount: try r.u64(), dataEnd: try r.u64(), indexStartBlock: try r.u64(),
                indexBlockCount: try r.u64(), fenceStartBlock: try r.u64(), fenceBlockCount: try r.u64(),
                fileSize: try r.u64())
            let covered = r.offset
            let crc = try r.u32()
            guard crc == Checksum.crc32c(UnsafeRawBufferPointer(rebasing: block[0..<covered])) else {
                return .failure(LayerFormatProblem(reason: "summary checksum mismatch"))
            }
            return .success(s)
        } catch {
            return .failure(LayerFormatProblem(reason: "summary block too short"))
        }
    }
}

extension LayerSummary {
    /// What is inconsistent between this summary and a file of `fileSize`
    /// bytes, or nil. Every block number is bounded by the file's size before
    /// any arithmetic, so no crafted summary can overflow.
    func problem(fileSize: Int) -> String? {
        let bs = UInt64(LayerFormat.blockSize)
        let size = UInt64(fileSize)
        let blocks = size / bs
        guard self.fileSize == size else { return "summary says \(self.fileSize) bytes, file has \(size)" }
        guard indexStartBlock >= 1, indexStartBlock <= blocks, indexBlockCount >= 1, indexBlockCount <= blocks,
              fenceStartBlock <= blocks, fenceBlockCount >= 1, fenceBlockCount <= blocks,
              dataEnd >= bs, dataEnd <= indexStartBlock * bs,
              indexStartBlock + indexBlockCount == fenceStartBlock, fenceStartBlock + fenceBlockCount == blocks,
              valueCount <= indexBlockCount * UInt64(version.entriesPerIndexBlock),
              valueCount > (indexBlockCount - 1) * UInt64(version.entriesPerIndexBlock),
              fenceBlockCount == (8 + indexBlockCount * UInt64(LayerFormat.fenceSize) + bs - 1) / bs,
              fenceBlockCount <= 8192,  // 64 MiB of fences: 2.6 million index blocks
              lsnStart <= lsnEnd, keys.first <= keys.last
        else { return "summary offsets are inconsistent with the file" }
        return nil
    }
}

/// The fence area: `[u32 crc32c(count, fences)][u32 count][(key 17, lsn 8) × count]`,
/// the first (key, lsn) of each index block, padded to whole blocks.
enum FenceArea {
    static func encode(_ fences: [UInt8], count: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 8 + fences.count + LayerFormat.blockSize)
        w.u32(crc(count: UInt32(count), fences[...]))
        w.u32(UInt32(count))
        w.bytes(fences)
        w.zeros((LayerFormat.blockSize - w.count % LayerFormat.blockSize) % LayerFormat.blockSize)
        return w.bytes
    }

    /// The packed fences, once count and checksum are verified.
    static func decode(_ area: UnsafeRawBufferPointer, indexBlocks: UInt64) -> Result<[UInt8], LayerFormatProblem> {
        guard area.count >= 8 else { return .failure(LayerFormatProblem(reason: "fence area too short")) }
        let stored = UInt32(bigEndian: area.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let count = UInt32(bigEndian: area.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let bytes = Int(count) * LayerFormat.fenceSize
        guard UInt64(count) == indexBlocks, 8 + bytes <= area.count else {
            return .failure(LayerFormatProblem(reason: "fence count \(count) does not match \(indexBlocks) index blocks"))
        }
        let fences = Array(area[8..<8 + bytes])
        guard crc(count: count, fences[...]) == stored else {
            return .failure(LayerFormatProblem(reason: "fence checksum mismatch"))
        }
        let size = LayerFormat.fenceSize
        let ordered = fences.withUnsafeBytes { f in
            (1..<max(1, Int(count))).allSatisfy { memcmp(f.baseAddress! + ($0 - 1) * size, f.baseAddress! + $0 * size, size) < 0 }
        }
        guard ordered else { return .failure(LayerFormatProblem(reason: "fences out of order")) }
        return .success(fences)
    }

    private static func crc(count: UInt32, _ fences: ArraySlice<UInt8>) -> UInt32 {
        let prefix = withUnsafeBytes(of: count.bigEndian) { Checksum.crc32c($0) }
        return fences.withUnsafeBytes { Checksum.crc32c($0, seed: prefix) }
    }
}

/// An index block: `[u32 crc32c(rest of block)][u16 count][entry × count]`, zero-padded.
/// Every block but the last is full; entries are in strictly increasing
/// (key, lsn) order across the whole index, and block b starts with fence b.
enum IndexBlock {
    static func encode(_ chunk: ArraySlice<IndexEntry>, version: LayerFormat.Version) -> [UInt8] {
        var block = ByteWriter(capacity: LayerFormat.blockSize)
        block.u32(0)
        block.u16(UInt16(chunk.count))
        for e in chunk { e.write(to: &block, version: version) }
        block.zeros(LayerFormat.blockSize - block.count)
        let crc = block.bytes.withUnsafeBytes { Checksum.crc32c(UnsafeRawBufferPointer(rebasing: $0[4...])) }
        for i in 0..<4 { block.bytes[i] = UInt8(truncatingIfNeeded: crc >> UInt32(24 - 8 * i)) }
        return block.bytes
    }

    static func count(_ block: UnsafeRawBufferPointer) -> Int {
        Int(UInt16(bigEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
    }

    /// What is wrong with index block `b` of a file with `summary` and `fences`
    /// (the packed first (key, lsn) of each block), or nil. Run once, when the
    /// block enters the cache: afterwards readers and compaction may trust
    /// its order and ranges, as the writer that merges them does.
    static func problem(_ block: UnsafeRawBufferPointer, number b: Int, summary: LayerSummary, fences: [UInt8]) -> String? {
        guard block.count == LayerFormat.blockSize,
              UInt32(bigEndian: block.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
                == Checksum.crc32c(UnsafeRawBufferPointer(rebasing: block[4...]))
        else { return "index block \(b): checksum mismatch" }
        let count = count(block)
        let version = summary.version
        let per = version.entriesPerIndexBlock
        let blocks = Int(summary.indexBlockCount)
        let expected = b < blocks - 1 ? per : Int(summary.valueCount) - (blocks - 1) * per
        guard count == expected, count >= 1 else { return "index block \(b) holds \(count) entries, the summary implies \(expected)" }
        let fs = LayerFormat.fenceSize
        let at = { (i: Int) in block.baseAddress! + version.entryOffset(i) }
        let fence = fences.withUnsafeBytes { f in memcmp(at(0), f.baseAddress! + b * fs, fs) }
        guard fence == 0 else { return "index block \(b) does not start at its fence" }
        if b + 1 < blocks {
            let next = fences.withUnsafeBytes { f in memcmp(at(count - 1), f.baseAddress! + (b + 1) * fs, fs) }
            guard next < 0 else { return "index block \(b) runs past the next block's fence" }
        }
        for i in 0..<count {
            if i > 0 && memcmp(at(i - 1), at(i), fs) >= 0 { return "index block \(b): entries out of order at \(i)" }
            let e = IndexEntry.read(block, at: version.entryOffset(i), version: version)
            guard summary.keys.contains(e.key), e.lsn >= summary.lsnStart, e.lsn <= summary.lsnEnd,
                  e.flags & ~(LayerFormat.flagBase | LayerFormat.flagImage) == 0,
                  summary.kind == .delta || e.flags == LayerFormat.flagBase | LayerFormat.flagImage
            else { return "index block \(b): entry \(i) (\(e.key) at \(e.lsn)) is outside the layer" }
        }
        return nil
    }
}

/// One index entry: where the value of (key, lsn) lives. `offset` and
/// `length` cover the blob (version 1: header and payload) or the payload
/// (version 2, whose `crc` is the payload's; version 1 keeps it in the blob).
struct IndexEntry: Equatable {
    var key: PageKey
    var lsn: Lsn
    var offset: UInt64
    var length: UInt32
    var flags: UInt8
    var crc: UInt32 = 0

    var isBase: Bool { flags & LayerFormat.flagBase != 0 }
    var isImage: Bool { flags & LayerFormat.flagImage != 0 }

    func write(to w: inout ByteWriter, version: LayerFormat.Version) {
        key.write(to: &w)
        w.u64(lsn.rawValue)
        w.u64(offset)
        w.u32(length)
        w.u8(flags)
        if version == .v2 { w.u32(crc) }
    }

    static func read(_ buf: UnsafeRawBufferPointer, at pos: Int, version: LayerFormat.Version) -> IndexEntry {
        var r = ByteReader(UnsafeRawBufferPointer(rebasing: buf[pos..<pos + version.entrySize]))
        // The block was bounds- and checksum-validated when it entered the cache.
        do throws(ByteReader.Underflow) {
            return IndexEntry(key: try PageKey.read(from: &r), lsn: Lsn(try r.u64()), offset: try r.u64(),
                              length: try r.u32(), flags: try r.u8(), crc: version == .v2 ? try r.u32() : 0)
        } catch {
            preconditionFailure("index entry read past its \(version.entrySize) bytes")
        }
    }
}

/// Version 1's 8 bytes before every value in the data area: the payload's
/// length and its CRC-32C, big-endian. A header never crosses a block
/// boundary (the writer padded), so a reader finds it whole in the value's
/// first block. Written only for the tests of version 1 files.
enum BlobHeader {
    static let size = 8

    /// Appends a blob: its header (length, CRC-32C of the payload) and the
    /// `length` bytes of payload that `fill` writes in place.
    static func append(payloadLength length: Int, to buffer: AlignedBuffer,
                       _ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        buffer.append(size + length) { blob in
            let payload = UnsafeMutableRawBufferPointer(rebasing: blob[size...])
            fill(payload)
            blob.storeBytes(of: UInt32(length).bigEndian, toByteOffset: 0, as: UInt32.self)
            blob.storeBytes(of: Checksum.crc32c(UnsafeRawBufferPointer(payload)).bigEndian, toByteOffset: 4, as: UInt32.self)
        }
    }

    /// The length and checksum stored at `at` in `block` (the caller checks `at + size` fits).
    static func decode(_ block: UnsafeRawBufferPointer, at: Int) -> (length: UInt32, crc: UInt32) {
        (UInt32(bigEndian: block.loadUnaligned(fromByteOffset: at, as: UInt32.self)),
         UInt32(bigEndian: block.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self)))
    }
}
