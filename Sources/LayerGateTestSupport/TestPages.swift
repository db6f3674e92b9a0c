import LayerGateStorage

/// The one page generator of the tests, the crash helper and the benchmarks:
/// 8 KiB whose bytes follow from `seed`, so a test can rebuild any page it
/// stored from the (key, LSN) it made the seed of.
public func seededPage(_ seed: UInt64) -> [UInt8] {
    var rng = SeededRandom(seed: seed)
    return [UInt8](unsafeUninitializedCapacity: pageSize) { buffer, count in
        for i in stride(from: 0, to: pageSize, by: 8) {
            let x = rng.next()
            for b in 0..<8 { buffer[i + b] = UInt8(truncatingIfNeeded: x >> (8 * UInt64(b))) }
        }
        count = pageSize
    }
}
