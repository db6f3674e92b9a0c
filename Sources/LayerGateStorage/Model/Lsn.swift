/// A log sequence number: the position of a record in the database's WAL.
/// Only the order matters; 0 means "nothing yet".
public struct Lsn: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static let zero = Lsn(0)
    public static let max = Lsn(UInt64.max)

    public static func < (a: Lsn, b: Lsn) -> Bool { a.rawValue < b.rawValue }

    /// Fixed-width hex, as used in file names so that names sort by LSN.
    public var hex16: String { Hex.fixed(rawValue, digits: 16) }

    public var description: String {
        // Postgres style X/Y, which operators recognise.
        "\(String(rawValue >> 32, radix: 16, uppercase: true))/\(String(rawValue & 0xFFFF_FFFF, radix: 16, uppercase: true))"
    }

    public var next: Lsn { Lsn(rawValue &+ 1) }
    public var previous: Lsn { Lsn(rawValue == 0 ? 0 : rawValue - 1) }
}
