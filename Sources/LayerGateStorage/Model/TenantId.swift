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
        let all = Substring(text)
        guard all.utf8.count == 32 else { throw .invalidTenantId(text) }
        let middle = all.utf8.index(all.startIndex, offsetBy: 16)
        guard let high = Hex.parseUInt64(all[..<middle], digits: 16), let low = Hex.parseUInt64(all[middle...], digits: 16) else {
            throw .invalidTenantId(text)
        }
        self.high = high
        self.low = low
    }

    public var description: String { Hex.fixed(high, digits: 16) + Hex.fixed(low, digits: 16) }

    public static func < (a: TenantId, b: TenantId) -> Bool { (a.high, a.low) < (b.high, b.low) }
}
