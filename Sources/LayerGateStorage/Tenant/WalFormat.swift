/// The byte layout of a WAL segment (format 2), encode next to decode.
///
/// A segment is a run of frames, each 8-byte aligned:
///
///     u32 magic "LGWF"  u8 kind  u8[3] 0  u32 payload length
///     u32 crc32c(bytes 0..<12, the sequence, the payload)   u64 sequence
///     payload, then zeros to the next multiple of 8
///
/// Kinds: a segment header (sequence 0) first; then one commit frame per
/// group commit (sequence 1, 2, …), each fsynced before the next is written;
/// then, when the WAL rolls to a new segment or closes cleanly, a seal
/// (the next sequence) after which nothing is written.
///
/// The checksum covers the length and the sequence, so no torn or zeroed
/// header verifies. Because commit n+1 is only written after commit n was
/// fsynced, a damaged frame followed by any later verified frame was durable
/// once: that is corruption, not a torn write.
///
/// Segment header payload: u32 format version, u64 start LSN (the name), u64
/// start LSN and u64 last record LSN of the segment before it (0: none; it
/// may have been deleted since), u64 × 2 tenant id.
/// A segment written with O_DIRECT ends each commit's write with *block
/// padding*: the 8 bytes "LGWF-pad" over and over, up to the next 4 KiB
/// boundary, which the next commit overwrites. Not zeros, so that a commit
/// zeroed after its fsync is not taken for padding. (A seal's write is padded
/// with zeros: nothing follows a seal.)
/// Commit payload: records, each `[u32 length][lsn u64][key 17][value]`
/// (value as `ValueCodec`). Seal payload: u64 offset of the seal, u64 last LSN,
/// u64 number of commits.
enum WalFormat {
    static let magic: UInt32 = 0x4C47_5746  // "LGWF"
    static let version: UInt32 = 2
    static let frameHeaderSize = 24
    static let headerPayloadSize = 44
    static let sealPayloadSize = 24

    enum Kind: UInt8 {
        case segmentHeader = 1
        case commit = 2
        case seal = 3
    }

    struct SegmentHeader: Equatable {
        var startLsn: Lsn
        var previousStart: Lsn
        /// The last record LSN of the previous segment: once that segment is
        /// deleted, the layers must reach at least this far.
        var previousLastLsn: Lsn
        var tenant: TenantId
    }

    struct Seal: Equatable {
        var offset: UInt64
        var lastLsn: Lsn
        var commits: UInt64
    }

    /// A frame found at some offset: its kind, sequence and payload range.
    struct Frame {
        var kind: Kind
        var sequence: UInt64
        var payload: Range<Int>
        /// Offset just past the frame and its padding.
        var end: Int
    }

    // MARK: encode

    /// Records as a commit payload (without the frame), encoded by the put
    /// that brings them so the commit leader only concatenates.
    static func encodeRecords(_ records: [Record]) -> [UInt8] {
        var w = ByteWriter(capacity: records.reduce(0) { $0 + 4 + 25 + ValueCodec.encodedSize($1.value) })
        for r in records {
            w.u32(UInt32(25 + ValueCodec.encodedSize(r.value)))
            w.u64(r.lsn.rawValue)
            r.key.write(to: &w)
            ValueCodec.encode(r.value, into: &w)
        }
        return w.bytes
    }

    /// The bytes a frame of `parts` takes, its padding included.
    static func frameSize(parts: [[UInt8]]) -> Int {
        let n = frameHeaderSize + parts.reduce(0) { $0 + $1.count }
        return n + (8 - n % 8) % 8
    }

    /// Writes the frame into `out`, exactly `frameSize(parts:)` bytes: a
    /// group commit's puts are copied once, into the frame where it is
    /// written from, not first into one payload.
    static func writeFrame(_ kind: Kind, sequence: UInt64, parts: [[UInt8]], into out: UnsafeMutableRawBufferPointer) {
        let length = parts.reduce(0) { $0 + $1.count }
        let size = frameSize(parts: parts)
        precondition(out.count == size, "a frame's buffer of the wrong size")
        out.storeBytes(of: magic.bigEndian, toByteOffset: 0, as: UInt32.self)
        out.storeBytes(of: (UInt32(kind.rawValue) << 24).bigEndian, toByteOffset: 4, as: UInt32.self)
        out.storeBytes(of: UInt32(length).bigEndian, toByteOffset: 8, as: UInt32.self)
        out.storeBytes(of: sequence.bigEndian, toByteOffset: 16, as: UInt64.self)
        var at = frameHeaderSize
        for part in parts {
            part.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[at..<at + $0.count]).copyMemory(from: $0) }
            at += part.count
        }
        UnsafeMutableRawBufferPointer(rebasing: out[at...]).initializeMemory(as: UInt8.self, repeating: 0)
        let crc = crcOfFrame(UnsafeRawBufferPointer(rebasing: out[0..<frameHeaderSize + length]))
        out.storeBytes(of: crc.bigEndian, toByteOffset: 12, as: UInt32.self)
    }

    /// Repeated from the end of a commit (8-byte aligned) to the block boundary.
    static let blockPadding: [UInt8] = Array("LGWF-pad".utf8)

    static func headerPayload(_ h: SegmentHeader) -> [UInt8] {
        var w = ByteWriter(capacity: headerPayloadSize)
        w.u32(version)
        w.u64(h.startLsn.rawValue)
        w.u64(h.previousStart.rawValue)
        w.u64(h.previousLastLsn.rawValue)
        w.u64(h.tenant.high)
        w.u64(h.tenant.low)
        return w.bytes
    }

    static func sealPayload(_ s: Seal) -> [UInt8] {
        var w = ByteWriter(capacity: sealPayloadSize)
        w.u64(s.offset)
        w.u64(s.lastLsn.rawValue)
        w.u64(s.commits)
        return w.bytes
    }

    // MARK: decode

    /// The frame at `offset` if it is whole and its checksum verifies; nil otherwise.
    static func frame(in bytes: UnsafeRawBufferPointer, at offset: Int) -> Frame? {
        guard offset >= 0, offset % 8 == 0, bytes.count - offset >= frameHeaderSize else { return nil }
        let h = UnsafeRawBufferPointer(rebasing: bytes[offset...])
        guard u32(h, 0) == magic, let kind = Kind(rawValue: h[4]), h[5] == 0, h[6] == 0, h[7] == 0 else { return nil }
        let length = Int(u32(h, 8))
        guard length <= h.count - frameHeaderSize else { return nil }
        let whole = UnsafeRawBufferPointer(rebasing: h[0..<frameHeaderSize + length])
        guard crcOfFrame(whole) == u32(h, 12) else { return nil }
        let end = offset + frameHeaderSize + length
        return Frame(kind: kind, sequence: u64(h, 16), payload: offset + frameHeaderSize..<end,
                     end: min(bytes.count, end + (8 - end % 8) % 8))
    }

    /// Whether the bytes from `pos` (8-byte aligned) to the end are block
    /// padding that ends on the block boundary after `pos`.
    static func isBlockPadding(_ b: UnsafeRawBufferPointer, from pos: Int) -> Bool {
        guard pos % 8 == 0, b.count % directIOAlignment == 0, pos < b.count, b.count - pos < directIOAlignment else {
            return false
        }
        for i in pos..<b.count where b[i] != blockPadding[(i - pos) % blockPadding.count] { return false }
        return true
    }

    static func decodeHeader(_ p: UnsafeRawBufferPointer) -> SegmentHeader? {
        guard p.count == headerPayloadSize, u32(p, 0) == version else { return nil }
        return SegmentHeader(startLsn: Lsn(u64(p, 4)), previousStart: Lsn(u64(p, 12)), previousLastLsn: Lsn(u64(p, 20)),
                             tenant: TenantId(high: u64(p, 28), low: u64(p, 36)))
    }

    static func decodeSeal(_ p: UnsafeRawBufferPointer) -> Seal? {
        guard p.count == sealPayloadSize else { return nil }
        return Seal(offset: u64(p, 0), lastLsn: Lsn(u64(p, 8)), commits: u64(p, 16))
    }

    /// The records of a commit payload; nil when any is malformed.
    static func decodeRecords(_ p: UnsafeRawBufferPointer) -> [Record]? {
        var out: [Record] = []
        var r = ByteReader(p)
        while !r.isAtEnd {
            guard let length = try? r.u32(), length >= 25, let body = try? r.raw(Int(length)) else { return nil }
            var b = ByteReader(body)
            guard let lsn = try? b.u64(), let key = try? PageKey.read(from: &b),
                  let value = ValueCodec.decode(UnsafeRawBufferPointer(rebasing: body[b.offset...]))
            else { return nil }
            out.append(Record(key: key, lsn: Lsn(lsn), value: value))
        }
        return out
    }

    private static func crcOfFrame(_ f: UnsafeRawBufferPointer) -> UInt32 {
        let c = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: f[0..<12]))
        return Checksum.crc32c(UnsafeRawBufferPointer(rebasing: f[16...]), seed: c)
    }

    private static func u32(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        UInt32(bigEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self))
    }

    private static func u64(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt64 {
        UInt64(bigEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
    }
}
