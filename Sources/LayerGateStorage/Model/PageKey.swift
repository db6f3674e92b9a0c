/// A Postgres buffer tag: which 8 KiB page of which relation fork.
///
/// Ordered as its packed form is: spc, db, rel, fork, block. The packed form
/// is 17 bytes, big-endian, so byte order equals key order; file names carry
/// it as 34 hex digits.
public struct PageKey: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var spcOid: UInt32
    public var dbOid: UInt32
    public var relNumber: UInt32
    public var fork: UInt8
    public var block: UInt32

    public static let packedSize = 17
    public static let min = PageKey(spcOid: 0, dbOid: 0, relNumber: 0, fork: 0, block: 0)
    public static let max = PageKey(spcOid: .max, dbOid: .max, relNumber: .max, fork: .max, block: .max)

    public init(spcOid: UInt32, dbOid: UInt32, relNumber: UInt32, fork: UInt8, block: UInt32) {
        self.spcOid = spcOid
        self.dbOid = dbOid
        self.relNumber = relNumber
        self.fork = fork
        self.block = block
    }

    /// Checks a fork number as it arrives on the wire (u32) against Postgres' u8.
    public init(spcOid: UInt32, dbOid: UInt32, relNumber: UInt32, wireFork fork: UInt32, block: UInt32) throws(StorageError) {
        guard let f = UInt8(exactly: fork) else { throw .invalidArgument("fork \(fork) is above 255") }
        self.init(spcOid: spcOid, dbOid: dbOid, relNumber: relNumber, fork: f, block: block)
    }

    /// Two words, not five fields: the in-memory layers hash a key on every
    /// GetPage, and each `combine` is a round of SipHash. Equal keys give
    /// equal words; the fork shares bits with the tablespace (both small).
    public func hash(into hasher: inout Hasher) {
        hasher.combine((UInt64(spcOid) << 32 | UInt64(dbOid)) ^ (UInt64(fork) << 56))
        hasher.combine(UInt64(relNumber) << 32 | UInt64(block))
    }

    public static func < (a: PageKey, b: PageKey) -> Bool {
        (a.spcOid, a.dbOid, a.relNumber, a.fork, a.block) < (b.spcOid, b.dbOid, b.relNumber, b.fork, b.block)
    }

    func write(to out: inout ByteWriter) {
        out.u32(spcOid); out.u32(dbOid); out.u32(relNumber); out.u8(fork); out.u32(block)
    }

    static func read(from r: inout ByteReader) throws(ByteReader.Underflow) -> PageKey {
        PageKey(spcOid: try r.u32(), dbOid: try r.u32(), relNumber: try r.u32(), fork: try r.u8(), block: try r.u32())
    }

    var hex: String {
        var w = ByteWriter(capacity: Self.packedSize)
        write(to: &w)
        return Hex.encode(w.bytes)
    }

    init?(hex: Substring) {
        guard let bytes = Hex.decode(hex, byteCount: Self.packedSize) else { return nil }
        guard let key = bytes.withUnsafeBytes({ buf -> PageKey? in
            var r = ByteReader(buf)
            return try? PageKey.read(from: &r)
        }) else { return nil }
        self = key
    }

    public var description: String { "\(spcOid)/\(dbOid)/\(relNumber).\(fork)#\(block)" }

    /// The next key in key order (`max` has none; it returns itself).
    var successor: PageKey {
        if block < .max { return PageKey(spcOid: spcOid, dbOid: dbOid, relNumber: relNumber, fork: fork, block: block + 1) }
        if fork < .max { return PageKey(spcOid: spcOid, dbOid: dbOid, relNumber: relNumber, fork: fork + 1, block: 0) }
        if relNumber < .max { return PageKey(spcOid: spcOid, dbOid: dbOid, relNumber: relNumber + 1, fork: 0, block: 0) }
        if dbOid < .max { return PageKey(spcOid: spcOid, dbOid: dbOid + 1, relNumber: 0, fork: 0, block: 0) }
        if spcOid < .max { return PageKey(spcOid: spcOid + 1, dbOid: 0, relNumber: 0, fork: 0, block: 0) }
        return self
    }
}

/// An inclusive range of keys.
public struct KeyRange: Hashable, Sendable {
    public var first: PageKey
    public var last: PageKey

    public init(first: PageKey, last: PageKey) {
        self.first = first
        self.last = last
    }

    public func contains(_ key: PageKey) -> Bool { first <= key && key <= last }
    public func overlaps(_ other: KeyRange) -> Bool { first <= other.last && other.first <= last }
}
