/// Size of every page LayerGate serves.
public let pageSize = 8192

/// One patch of a delta: `data` replaces the bytes at `offset`.
public struct Patch: Hashable, Sendable {
    public var offset: Int
    public var data: [UInt8]

    public init(offset: Int, data: [UInt8]) {
        self.offset = offset
        self.data = data
    }
}

/// A change to a page: start from the previous version (or a zero page when
/// `willInit`), then apply the patches in order.
public struct Delta: Hashable, Sendable {
    public var willInit: Bool
    public var patches: [Patch]

    public init(willInit: Bool, patches: [Patch]) {
        self.willInit = willInit
        self.patches = patches
    }
}

public enum RecordValue: Hashable, Sendable {
    case image([UInt8])
    case delta(Delta)

    /// True when reconstruction can start here without anything older.
    public var isBase: Bool {
        switch self {
        case .image: return true
        case .delta(let d): return d.willInit
        }
    }
}

/// A page version at (key, lsn).
public struct Record: Hashable, Sendable {
    public var key: PageKey
    public var lsn: Lsn
    public var value: RecordValue

    public init(key: PageKey, lsn: Lsn, value: RecordValue) {
        self.key = key
        self.lsn = lsn
        self.value = value
    }

    /// Checks the value's shape (the part that does not depend on the tenant).
    public func validate() throws(StorageError) {
        guard lsn.rawValue >= 1 else { throw .invalidArgument("record for \(key) has LSN 0") }
        switch value {
        case .image(let bytes):
            guard bytes.count == pageSize else {
                throw .invalidArgument("image for \(key) at \(lsn) is \(bytes.count) bytes, not \(pageSize)")
            }
        case .delta(let d):
            guard d.willInit || !d.patches.isEmpty else {
                throw .invalidArgument("delta for \(key) at \(lsn) has no patch and no will_init")
            }
            guard d.patches.count <= Int(UInt16.max) else {
                throw .invalidArgument("delta for \(key) at \(lsn) has \(d.patches.count) patches")
            }
            for p in d.patches {
                // Checked as Int: offset and count are each ≤ Int.max / 2 in practice, but
                // compare without adding first so no input can overflow.
                guard !p.data.isEmpty, p.offset >= 0, p.offset < pageSize, p.data.count <= pageSize - p.offset else {
                    throw .invalidArgument(
                        "delta for \(key) at \(lsn) has a patch at offset \(p.offset) of \(p.data.count) bytes outside the page or empty")
                }
            }
        }
    }
}
