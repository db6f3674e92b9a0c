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
public final class PageCache: @unchecked Sendable {
    // @unchecked: every stored property is immutable after init; `shardRefs`
    // and `memoryRef` are unretained copies of `shards` and `memory`, which
    // this object owns for its whole life.
    public static let blockSize = 8192

    public struct Stats: Sendable, Equatable {
        public var capacity: Int
        public var used: Int
        public var hits: UInt64
        public var misses: UInt64
        public var evictions: UInt64
        /// Misses the event loop filled from the OS page cache itself, with no read thread (a part of `misses`).
        public var fromOsCache: UInt64
        /// Misses the event loop read from the disk itself (io_uring), with no read thread (a part of `misses`).
        public var byLoopReads: UInt64
    }

    /// Who filled a miss, for `Stats`: a read thread (the disk), the event
    /// loop from the OS page cache, or the event loop's own disk read.
    public enum LoadSource: Sendable {
        case readThread
        case osCache
        case loopRead
    }

    public let capacity: Int
    // Unmanaged copies for the hit path: `self` keeps both alive, and taking
    // strong references there made two threads fight over their refcounts.
    @usableFromInline let shards: [Shard]
    @usableFromInline let memory: SlotMemory
    @usableFromInline let shardRefs: UnsafeMutableBufferPointer<Unmanaged<Shard>>
    @usableFromInline let memoryRef: Unmanaged<SlotMemory>
    private let osCacheLoads = Atomic<UInt64>(0)
    private let loopReadLoads = Atomic<UInt64>(0)

    /// - Parameter capacity: number of 8 KiB slots (at least 1).
    public init(capacity: Int) {
        precondition(capacity >= 1, "page cache needs at least one slot")
        self.capacity = capacity
        // Many small shards: two readers rarely meet on one lock.
        let shardCount = Swift.max(1, Swift.min(256, capacity / 32))
        memory = SlotMemory(slots: capacity, slotSize: Self.blockSize)
        var shards: [Shard] = []
        var start = 0
        for i in 0..<shardCount {
            let n = capacity / shardCount + (i < capacity % shardCount ? 1 : 0)
            shards.append(Shard(firstSlot: start, count: n))
            start += n
        }
        self.shards = shards
        shardRefs = .allocate(capacity: shards.count)
        _ = shardRefs.initialize(from: shards.map { Unmanaged.passUnretained($0) })
        memoryRef = Unmanaged.passUnretained(memory)
    }

    deinit { shardRefs.deallocate() }

    /// High bits pick the shard; the shard's table uses the low bits.
    @inlinable
    func shard(for key: BlockKey) -> Shard {
        shards[Int(truncatingIfNeeded: key.mixed >> 40) % shards.count]
    }

    @inlinable
    func shardRef(for key: BlockKey) -> Unmanaged<Shard> {
        shardRefs[Int(truncatingIfNeeded: key.mixed >> 40) % shardRefs.count]
    }

    /// Runs `body` over the block's 8192 bytes. On a miss, `load` fills a
    /// buffer from disk (and validates it); the result is cached unless every
    /// slot is pinned, in which case it is served once without caching.
    @inlinable
    public func withBlock<R, E: Error>(
        file: UInt64, block: UInt64,
        load: (UnsafeMutableRawBufferPointer) throws(E) -> Void,
        body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        let key = BlockKey(file: file, block: block)
        let hit = shardRef(for: key)._withUnsafeGuaranteedRef { shard in
            memoryRef._withUnsafeGuaranteedRef { shard.pinIfPresent(key, memory: $0) }
        }
        if let slot = hit {
            defer { memoryRef._withUnsafeGuaranteedRef { $0.unpin(slot) } }
            return try body(memoryRef._withUnsafeGuaranteedRef { $0.slot(slot) })
        }
        let shard = shard(for: key)
        // Aligned for a direct read (`ReadDescriptor`).
        return try withUnsafeTemporaryAllocation(byteCount: Self.blockSize, alignment: directIOAlignment) { temp throws(E) -> R in
            try load(temp)
            let installed = shard.install(key, from: UnsafeRawBufferPointer(temp), memory: memory)
            guard let slot = installed else { return try body(UnsafeRawBufferPointer(temp)) }
            defer { memory.unpin(slot) }
            return try body(memory.slot(slot))
        }
    }

    /// Reads the consecutive `blocks` of a file with one `load` (one pread into a
    /// buffer of `blocks.count` × 8 KiB), installs each block, and runs `body`
    /// over the whole run. A value that spans two uncached blocks then costs one
    /// disk round trip, not two in a row. Each block counts as a hit or a miss,
    /// as if read alone; `source`: who filled the misses (`Stats`).
    public func withRun<R, E: Error>(
        file: UInt64, blocks: Range<UInt64>, source: LoadSource = .readThread,
        load: (UnsafeMutableRawBufferPointer) throws(E) -> Void,
        body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try withUnsafeTemporaryAllocation(byteCount: blocks.count * Self.blockSize, alignment: directIOAlignment) { run throws(E) -> R in
            try load(run)
            install(file: file, blocks: blocks, from: UnsafeRawBufferPointer(run), source: source)
            return try body(UnsafeRawBufferPointer(run))
        }
    }

    /// Installs the consecutive `blocks` of a file from `run`, bytes already
    /// read and checked by the caller (`blocks.count` × 8 KiB), each block
    /// not cached yet counted as filled by `source`. For a read whose buffer
    /// outlives the install (the event loop's io_uring reads): no copy into a
    /// run of the cache's own first.
    func install(file: UInt64, blocks: Range<UInt64>, from run: UnsafeRawBufferPointer, source: LoadSource) {
        precondition(run.count == blocks.count * Self.blockSize, "a run of \(blocks.count) blocks is \(run.count) bytes")
        for (i, block) in blocks.enumerated() {
            let key = BlockKey(file: file, block: block)
            let shard = shard(for: key)
            if let present = shard.pinIfPresent(key, memory: memory) {
                memory.unpin(present)
                continue
            }
            switch source {
            case .readThread: break
            case .osCache: osCacheLoads.add(1, ordering: .relaxed)
            case .loopRead: loopReadLoads.add(1, ordering: .relaxed)
            }
            let bytes = UnsafeRawBufferPointer(rebasing: run[i * Self.blockSize..<(i + 1) * Self.blockSize])
            if let slot = shard.install(key, from: bytes, memory: memory) { memory.unpin(slot) }
        }
    }

    /// Runs `body` over the block if it is cached; nil (and no I/O, no miss
    /// counted) when it is not. For callers that must not touch the disk.
    @inlinable
    public func withCachedBlock<R, E: Error>(
        file: UInt64, block: UInt64, body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R? {
        let key = BlockKey(file: file, block: block)
        let hit = shardRef(for: key)._withUnsafeGuaranteedRef { shard in
            memoryRef._withUnsafeGuaranteedRef { shard.pinIfPresent(key, memory: $0, countMiss: false) }
        }
        guard let slot = hit else { return nil }
        defer { memoryRef._withUnsafeGuaranteedRef { $0.unpin(slot) } }
        return try body(memoryRef._withUnsafeGuaranteedRef { $0.slot(slot) })
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
        var total = Stats(capacity: capacity, used: 0, hits: 0, misses: 0, evictions: 0,
                          fromOsCache: osCacheLoads.load(ordering: .relaxed), byLoopReads: loopReadLoads.load(ordering: .relaxed))
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
@usableFromInline
struct BlockKey: Hashable, Sendable {
    @usableFromInline var file: UInt64
    @usableFromInline var block: UInt64

    @inlinable init(file: UInt64, block: UInt64) {
        self.file = file
        self.block = block
    }

    /// A well-mixed 64-bit hash (the murmur3 finalizer over both fields).
    @inlinable var mixed: UInt64 {
        var h = file &* 0x9E37_79B9_7F4A_7C15 ^ block
        h ^= h >> 33
        h &*= 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h &*= 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        return h
    }
}

/// The slab of slot memory, allocated once, and each slot's pin count.
///
/// Pins only grow under the slot's shard lock (a hit or an install), and a
/// slot is only reused under that lock when its count is zero; so unpinning
/// can be a lock-free decrement, with release ordering so the reader's last
/// read of the bytes happens before any reuse.
@usableFromInline
final class SlotMemory: @unchecked Sendable {
    // @unchecked: a slot's bytes are written only while it is unpinned and out
    // of the map, under its shard's lock; readers only touch pinned slots.
    private let base: UnsafeMutableRawPointer
    private let pins: UnsafeMutablePointer<Atomic<Int32>>
    private let slots: Int
    private let slotSize: Int

    init(slots: Int, slotSize: Int) {
        self.slots = slots
        self.slotSize = slotSize
        base = UnsafeMutableRawPointer.allocate(byteCount: slots * slotSize, alignment: 4096)
        pins = .allocate(capacity: slots)
        for i in 0..<slots { (pins + i).initialize(to: Atomic(0)) }
    }

    deinit {
        pins.deinitialize(count: slots)
        pins.deallocate()
        base.deallocate()
    }

    @usableFromInline
    func slot(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + i * slotSize, count: slotSize)
    }

    func fill(_ i: Int, from src: UnsafeRawBufferPointer) {
        (base + i * slotSize).copyMemory(from: src.baseAddress!, byteCount: slotSize)
    }

    /// Only under the shard lock.
    func pin(_ i: Int) { pins[i].add(1, ordering: .relaxed) }

    @usableFromInline
    func unpin(_ i: Int) { pins[i].subtract(1, ordering: .releasing) }

    /// Under the shard lock: nobody can pin it meanwhile.
    func isPinned(_ i: Int) -> Bool { pins[i].load(ordering: .acquiring) != 0 }
}
