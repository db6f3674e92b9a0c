import CSystemShims

/// Big-endian encoder into a growable array.
struct ByteWriter {
    var bytes: [UInt8]

    init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
    mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
    mutating func bytes(_ b: some Collection<UInt8>) { bytes.append(contentsOf: b) }
    mutating func zeros(_ n: Int) {
        guard n > 0 else { return }
        bytes.append(contentsOf: [UInt8](repeating: 0, count: n))
    }
    var count: Int { bytes.count }
}

/// Big-endian decoder over borrowed bytes; every read is bounds-checked.
struct ByteReader {
    struct Underflow: Error {}

    private let base: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { base = buffer }

    var remaining: Int { base.count - offset }
    var isAtEnd: Bool { offset == base.count }

    mutating func raw(_ n: Int) throws(Underflow) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw Underflow() }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: base[offset..<offset + n])
    }

    mutating func u8() throws(Underflow) -> UInt8 { try raw(1)[0] }
    mutating func u16() throws(Underflow) -> UInt16 { let b = try raw(2); return UInt16(b[0]) << 8 | UInt16(b[1]) }
    mutating func u32() throws(Underflow) -> UInt32 { try raw(4).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws(Underflow) -> UInt64 { try raw(8).reduce(0) { $0 << 8 | UInt64($1) } }
}

enum Checksum {
    static func crc32c(_ buffer: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = buffer.baseAddress else { return seed }
        return lg_crc32c(seed, base, buffer.count)
    }

    static func crc32c(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc32c($0) } }
}

/// Sizes as people read them in messages: "3.2 GiB", "12 MiB", "640 KiB", "0 bytes".
enum ByteCount {
    /// Three significant digits (truncated) from KiB up: a message that sets
    /// what is needed beside what is free must not show them equal.
    static func describe(_ n: Int) -> String {
        let n = max(0, n)
        if n >= 1 << 30 { return scaled(n, 30, "GiB") }
        if n >= 1 << 20 { return scaled(n, 20, "MiB") }
        if n >= 1 << 10 { return scaled(n, 10, "KiB") }
        return "\(n) bytes"
    }

    private static func scaled(_ n: Int, _ shift: Int, _ unit: String) -> String {
        let whole = n >> shift
        let decimals = whole >= 100 ? 0 : whole >= 10 ? 1 : 2
        guard decimals > 0 else { return "\(whole) \(unit)" }
        let scale = decimals == 1 ? 10 : 100
        let fraction = ((n - (whole << shift)) * scale) >> shift
        let digits = String(fraction)
        return "\(whole).\(String(repeating: "0", count: decimals - digits.count))\(digits) \(unit)"
    }
}
