/// The page cache's map from block to slot: open addressing with linear
/// probing and backward-shift deletion, at most half full.
///
/// Why not `Dictionary`: a hit is a handful of nanoseconds of real work, and
/// SipHash plus the generic table was a quarter of it. File id 0 is never
/// handed out, so it marks an empty bucket.
struct BlockTable {
    private var files: [UInt64]
    private var blocks: [UInt64]
    private var values: [Int32]
    private let mask: Int
    private(set) var count = 0

    init(capacity: Int) {
        var size = 8
        while size < capacity * 2 + 2 { size <<= 1 }
        files = Array(repeating: 0, count: size)
        blocks = Array(repeating: 0, count: size)
        values = Array(repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private func home(_ key: BlockKey) -> Int {
        Int(truncatingIfNeeded: key.mixed & UInt64(mask))
    }

    subscript(key: BlockKey) -> Int? {
        get {
            var i = home(key)
            while files[i] != 0 {
                if files[i] == key.file && blocks[i] == key.block { return Int(values[i]) }
                i = (i + 1) & mask
            }
            return nil
        }
        set {
            if let v = newValue { insert(key, v) } else { remove(key) }
        }
    }

    private mutating func insert(_ key: BlockKey, _ value: Int) {
        precondition(key.file != 0, "file id 0 is reserved")
        var i = home(key)
        while files[i] != 0 {
            if files[i] == key.file && blocks[i] == key.block {
                values[i] = Int32(value)
                return
            }
            i = (i + 1) & mask
        }
        precondition(count < (mask + 1) / 2, "block table over half full: more entries than cache slots")
        files[i] = key.file
        blocks[i] = key.block
        values[i] = Int32(value)
        count += 1
    }

    private mutating func remove(_ key: BlockKey) {
        var i = home(key)
        while files[i] != 0 {
            if files[i] == key.file && blocks[i] == key.block { break }
            i = (i + 1) & mask
        }
        guard files[i] != 0 else { return }
        // Backward-shift: pull later entries of the cluster into the hole so
        // lookups never need tombstones.
        var hole = i
        var j = (i + 1) & mask
        while files[j] != 0 {
            let h = home(BlockKey(file: files[j], block: blocks[j]))
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let inRange = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j)
            if !inRange {
                files[hole] = files[j]
                blocks[hole] = blocks[j]
                values[hole] = values[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        files[hole] = 0
        count -= 1
    }
}
