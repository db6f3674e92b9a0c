import LayerGateWire

/// The records `layergate torture` writes to one tenant: a pure function of
/// the record's number, so after any crash the expected page of any key at
/// any LSN can be recomputed, and so a put that failed is simply sent again.
///
/// Record n (1, 2, …) has LSN 256·n and block (n − 1) mod `keys`. Block k's
/// versions are n = k + 1, k + 1 + keys, …; every sixth is a full image (the
/// first always is), the others patch 8 bytes at an offset derived from n.
struct TortureModel {
    let tenantIndex: UInt64
    let keys: UInt64 = 97
    static let lsnStep: UInt64 = 256

    /// Record numbers the server acknowledged: 1…acked are durable.
    var acked: UInt64 = 0

    static func lsn(_ n: UInt64) -> UInt64 { n * lsnStep }
    static func number(ofLsn lsn: UInt64) -> UInt64 { lsn / lsnStep }

    func block(of n: UInt64) -> UInt64 { (n - 1) % keys }

    func key(block: UInt64) -> Wire.PageKey {
        Wire.PageKey(spcOid: 1663, dbOid: 13, relNumber: 7000 + UInt32(tenantIndex), fork: 0, block: UInt32(block))
    }

    private func isImage(_ n: UInt64) -> Bool { ((n - 1) / keys) % 6 == 0 }

    func record(_ n: UInt64) -> Wire.Record {
        let key = key(block: block(of: n))
        if isImage(n) { return Wire.Record(key: key, lsn: Self.lsn(n), value: .image(image(n))) }
        let (offset, bytes) = patch(n)
        return Wire.Record(key: key, lsn: Self.lsn(n), value: .delta(Wire.DeltaRecord(
            willInit: false, patches: [Wire.Patch(offset: UInt32(offset), data: bytes)])))
    }

    /// The page of block `k` as of record number `n` (its newest version at
    /// or below n), or nil when the block has none yet.
    func page(block k: UInt64, atNumber n: UInt64) -> [UInt8]? {
        guard n >= k + 1 else { return nil }
        var newest = (k + 1) + (n - (k + 1)) / keys * keys
        var versions: [UInt64] = []
        while !isImage(newest) {
            versions.append(newest)
            newest -= keys
        }
        var page = image(newest)
        for v in versions.reversed() {
            let (offset, bytes) = patch(v)
            page.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        }
        return page
    }

    private func image(_ n: UInt64) -> [UInt8] {
        var x = (n &+ tenantIndex &* 0x9E37_79B9) &* 0x9E37_79B9_7F4A_7C15 | 1
        var out = [UInt8](repeating: 0, count: 8192)
        for i in stride(from: 0, to: 8192, by: 8) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            withUnsafeBytes(of: x) { out.replaceSubrange(i..<i + 8, with: $0) }
        }
        return out
    }

    private func patch(_ n: UInt64) -> (Int, [UInt8]) {
        (Int((n &* 31) % 8184), withUnsafeBytes(of: (n ^ tenantIndex << 56).bigEndian) { Array($0) })
    }
}
