import Synchronization

/// The process-wide cache of 8 KiB layer-file blocks, keyed by (file id, block).
///
/// Why there is no invalidation: a file id is taken from a process-wide counter
/// each time a layer file is opened and is never reused, and a published layer
/// file is never written again. So a cached block is always the bytes of the
/// open file it names; a deleted file's blocks simply stop being asked for.
///
/// Concurrency: slots are split into shards, each with its own lock, so hits on
/// different blocks rarely meet. A reader *pins* a slot under the shard lock,
/// releases the lock, reads the bytes, then unpins: no lock is held while a
/// body runs, and no lock is ever held across disk I/O (misses read into a
/// stack buffer first, then take the lock to install the block).
///
/// Eviction is S3-FIFO per shard: new blocks enter a small probation FIFO and
/// are promoted to the main FIFO only if touched again, so a one-time scan of a
/// large layer passes through probation without flushing the hot set.
public final class PageCache: Sendable {
    public static let blockSize = 8192

    public struct Stats: Sendable, Equatable {
        public var capacity: Int
        public var used: Int
        public var hits: UInt64
        public var misses: UInt64
        public var evictions: UInt64
    }

    public let capacity: Int
    private let shards: [Shard]
    private let memory: SlotMemory

    /// - Parameter capacity: number of 8 KiB slots (at least 1).
    public init(capacity: Int) {
        precondition(capacity >= 1, "page cache needs at least one slot")
        self.capacity = capacity
        let shardCount = Swift.max(1, Swift.min(32, capacity / 64))
        memory = SlotMemory(slots: capacity, slotSize: Self.blockSize)
        var shards: [Shard] = []
        var start = 0
        for i in 0..<shardCount {
            let n = capacity / shardCount + (i < capacity % shardCount ? 1 : 0)
            shards.append(Shard(firstSlot: start, count: n))
            start += n
        }
        self.shards = shards
    }

    private func shard(for key: BlockKey) -> Shard {
        var h = key.file &* 0x9E37_79B9_7F4A_7C15 ^ key.block &* 0xC2B2_AE3D_27D4_EB4F
        h ^= h >> 29
        return shards[Int(h % UInt64(shards.count))]
    }

    /// Runs `body` over the block's 8192 bytes. On a miss, `load` fills a
    /// buffer from disk (and validates it); the result is cached unless every
    /// slot is pinned, in which case it is served once without caching.
    public func withBlock<R>(
        file: UInt64, block: UInt64,
        load: (UnsafeMutableRawBufferPointer) throws(StorageError) -> Void,
        body: (UnsafeRawBufferPointer) throws(StorageError) -> R
    ) throws(StorageError) -> R {
        let key = BlockKey(file: file, block: block)
        let shard = shard(for: key)
        if let slot = shard.pinIfPresent(key) {
            defer { shard.unpin(slot) }
            return try body(memory.slot(slot))
        }
        return try withUnsafeTemporaryAllocation(byteCount: Self.blockSize, alignment: 16) { temp throws(StorageError) -> R in
            try load(temp)
            let installed = shard.install(key, from: UnsafeRawBufferPointer(temp), memory: memory)
            guard let slot = installed else { return try body(UnsafeRawBufferPointer(temp)) }
            defer { shard.unpin(slot) }
            return try body(memory.slot(slot))
        }
    }

    /// True when the block is cached (does not count as a hit).
    public func contains(file: UInt64, block: UInt64) -> Bool {
        let key = BlockKey(file: file, block: block)
        return shard(for: key).contains(key)
    }

    /// Forgets every block of a file: its memory is reused first.
    public func dropFile(_ file: UInt64) {
        for s in shards { s.drop { $0.file == file } }
    }

    public func dropFiles(_ files: Set<UInt64>) {
        guard !files.isEmpty else { return }
        for s in shards { s.drop { files.contains($0.file) } }
    }

    public var stats: Stats {
        var total = Stats(capacity: capacity, used: 0, hits: 0, misses: 0, evictions: 0)
        for s in shards {
            let st = s.stats()
            total.used += st.used
            total.hits += st.hits
            total.misses += st.misses
            total.evictions += st.evictions
        }
        return total
    }
}

/// Cache key: a file id (never reused) and a block number in that file.
struct BlockKey: Hashable, Sendable {
    var file: UInt64
    var block: UInt64
}

/// The slab of slot memory, allocated once.
final class SlotMemory: @unchecked Sendable {
    // @unchecked: a slot's bytes are written only while it is unpinned and out
    // of the map, under its shard's lock; readers only touch pinned slots.
    private let base: UnsafeMutableRawPointer
    private let slotSize: Int

    init(slots: Int, slotSize: Int) {
        self.slotSize = slotSize
        base = UnsafeMutableRawPointer.allocate(byteCount: slots * slotSize, alignment: 4096)
    }

    deinit { base.deallocate() }

    func slot(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + i * slotSize, count: slotSize)
    }

    func fill(_ i: Int, from src: UnsafeRawBufferPointer) {
        (base + i * slotSize).copyMemory(from: src.baseAddress!, byteCount: slotSize)
    }
}
