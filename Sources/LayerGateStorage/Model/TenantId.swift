/// A tenant's 128-bit id, written as 32 hex digits (read in either case,
/// always shown in lowercase).
public struct TenantId: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses 32 hex digits; anything else is `StorageError.invalidTenantId`.
    public init(parsing text: String) throws(StorageError) {
        guard let bytes = Hex.decode(Substring(text), byteCount: 16) else {
            throw .invalidTenantId(text)
        }
        high = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        low = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    public var description: String { Hex.fixed(high, digits: 16) + Hex.fixed(low, digits: 16) }

    public static func < (a: TenantId, b: TenantId) -> Bool { (a.high, a.low) < (b.high, b.low) }
}
