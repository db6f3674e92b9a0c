/// Fixed-width lowercase hex, used for ids and file names.
enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func fixed(_ value: UInt64, digits count: Int) -> String {
        var out = [UInt8](repeating: 0, count: count)
        var v = value
        for i in stride(from: count - 1, through: 0, by: -1) {
            out[i] = digits[Int(v & 0xF)]
            v >>= 4
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses exactly `count` hex digits (either case); nil on anything else.
    static func decode(_ text: Substring, byteCount: Int) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count == byteCount * 2 else { return nil }
        var out = [UInt8](repeating: 0, count: byteCount)
        for i in 0..<byteCount {
            guard let hi = nibble(utf8[2 * i]), let lo = nibble(utf8[2 * i + 1]) else { return nil }
            out[i] = hi << 4 | lo
        }
        return out
    }

    static func parseUInt64(_ text: Substring, digits count: Int) -> UInt64? {
        guard let bytes = decode(text, byteCount: count / 2), count % 2 == 0 else { return nil }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
