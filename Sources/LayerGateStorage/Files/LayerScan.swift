/// Reads a layer's values in file order, as a merge or a check of every
/// value does, in windows of many blocks read at once past the page cache.
///
/// Why: through the page cache every block of a scan was a read of its own,
/// and with direct layer reads (no OS read-ahead) each one waited for the
/// disk: a compaction of 500 MB took 4.4 s against 2.6 s through the OS page
/// cache (docs/MEASUREMENTS.md). A scan's blocks are read once and never
/// again, so they also no longer push the pages GetPage serves out of the
/// page cache.
///
/// One user at a time (a merge's thread); the window is its own memory.
final class LayerScan {
    let layer: LayerReader
    private let window: UnsafeMutableRawBufferPointer
    private var held: Range<UInt64> = 0..<0

    /// The memory one merge's scans share among its inputs. Each window is
    /// at least `LayerReader.maxRunBlocks` (32 KiB), so past 512 inputs a
    /// merge holds 32 KiB per input instead (a thousand L0 layers: 32 MiB).
    static let budgetBytes = 16 << 20
    /// A window's most blocks: 512 KiB, a read large enough that the disk's time per byte, not per read, counts.
    static let maxWindowBlocks = 64

    /// A scan of `layer`, one of `inputs` scanned side by side: their windows share `budgetBytes`.
    init(_ layer: LayerReader, inputs: Int) {
        self.layer = layer
        let blocks = min(Self.maxWindowBlocks, max(LayerReader.maxRunBlocks, Self.budgetBytes / max(1, inputs) / LayerFormat.blockSize))
        window = .allocate(byteCount: blocks * LayerFormat.blockSize, alignment: directIOAlignment)
    }

    deinit { window.deallocate() }

    private var windowBlocks: Int { window.count / LayerFormat.blockSize }

    /// The value of `entry`, one of this layer's, from the window: the window
    /// moves to start at its first block when it does not hold them all. A value
    /// longer than a window is read through the page cache.
    func value(of entry: IndexEntry) throws(StorageError) -> RecordValue {
        _ = try layer.payloadLength(of: entry)  // checks the entry before its blocks are trusted as a range
        let blocks = layer.blocks(of: entry)
        guard blocks.count <= windowBlocks else { return try layer.value(of: entry) }
        if !(held.lowerBound <= blocks.lowerBound && blocks.upperBound <= held.upperBound) {
            let data = layer.dataBlocks
            let next = blocks.lowerBound..<min(blocks.lowerBound + UInt64(windowBlocks), data.upperBound)
            held = 0..<0  // a failed read leaves nothing held
            try layer.readBlocks(next, into: UnsafeMutableRawBufferPointer(rebasing: window[0..<next.count * LayerFormat.blockSize]))
            held = next
        }
        let (first, window) = (held.lowerBound, UnsafeRawBufferPointer(self.window))
        return try layer.value(of: entry) { buf throws(StorageError) in
            try layer.readPayload(entry, into: buf, window: window, first: first)
        }
    }
}
