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

    /// Exactly `count` (≤ 16) hex digits as a number; nil on anything else.
    /// Allocates nothing: tenant ids are parsed this way on every GetPage.
    static func parseUInt64(_ text: Substring, digits count: Int) -> UInt64? {
        guard count <= 16, text.utf8.count == count else { return nil }
        var v: UInt64 = 0
        for c in text.utf8 {
            guard let n = nibble(c) else { return nil }
            v = v << 4 | UInt64(n)
        }
        return v
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
