import LayerGateStorage

/// The records a crash test writes: a pure function of the LSN, so the test
/// can rebuild what every acknowledged put stored without talking to the
/// process that died.
public enum CrashWorkload {
    public static let tenant = try! TenantId(parsing: "c0ffee00c0ffee00c0ffee00c0ffee00")
    public static let keyCount: UInt32 = 23

    public static func key(for lsn: UInt64) -> PageKey {
        PageKey(spcOid: 1663, dbOid: 7, relNumber: 4242, fork: 0, block: UInt32(lsn % UInt64(keyCount)))
    }

    public static func record(_ lsn: UInt64) -> Record {
        let k = key(for: lsn)
        if lsn <= UInt64(keyCount) || lsn % 5 == 0 {
            return Record(key: k, lsn: Lsn(lsn), value: .image(seededPage(lsn)))
        }
        let bytes = withUnsafeBytes(of: lsn.bigEndian) { Array($0) }
        return Record(key: k, lsn: Lsn(lsn), value: .delta(Delta(willInit: false, patches: [
            Patch(offset: Int(lsn % 8000), data: bytes),
        ])))
    }

    /// Puts are batches of 1–3 consecutive LSNs starting at `first`.
    public static func batch(startingAt first: UInt64) -> [Record] {
        (first..<first + 1 + first % 3).map(record)
    }

    /// The page of `key` at `lsn` when every LSN from 1 to `lastLsn` was stored.
    public static func expectedPage(_ key: PageKey, at lsn: UInt64) -> [UInt8]? {
        var page: [UInt8]?
        var l = UInt64(key.block)
        if l == 0 { l = UInt64(keyCount) }
        while l <= lsn {
            switch record(l).value {
            case .image(let b): page = b
            case .delta(let d):
                var p = page ?? [UInt8](repeating: 0, count: pageSize)
                for patch in d.patches { p.replaceSubrange(patch.offset..<patch.offset + patch.data.count, with: patch.data) }
                page = p
            }
            l += UInt64(keyCount)
        }
        return page
    }
}
