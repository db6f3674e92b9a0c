import Synchronization

/// One lock's worth of the page cache: a map from block to slot, and the
/// S3-FIFO queues that decide what to evict. Slots are global indices into
/// the shared `SlotMemory`.
@usableFromInline
final class Shard: Sendable {
    private let state: Mutex<ShardState>

    init(firstSlot: Int, count: Int) {
        state = Mutex(ShardState(firstSlot: firstSlot, count: count))
    }

    @usableFromInline
    func pinIfPresent(_ key: BlockKey, memory: SlotMemory, countMiss: Bool = true) -> Int? {
        state.withLock { s in
            guard let local = s.map[key] else {
                if countMiss { s.misses += 1 }
                return nil
            }
            s.hits += 1
            memory.pin(s.firstSlot + local)
            if s.meta[local].freq < 3 { s.meta[local].freq += 1 }
            return s.firstSlot + local
        }
    }

    func contains(_ key: BlockKey) -> Bool { state.withLock { $0.map[key] != nil } }

    /// Installs a block read from disk and returns its pinned slot, or nil
    /// when no slot can be freed (all pinned).
    @usableFromInline
    func install(_ key: BlockKey, from bytes: UnsafeRawBufferPointer, memory: SlotMemory) -> Int? {
        state.withLock { s in
            if let local = s.map[key] {
                // Another reader installed it meanwhile; the bytes are the same file's.
                memory.pin(s.firstSlot + local)
                return s.firstSlot + local
            }
            // Ask the ghost list before evicting: an eviction adds to it and may push this key out.
            let seenBefore = s.ghost.remove(key)
            guard let local = s.takeFreeSlot(memory: memory) else { return nil }
            memory.fill(s.firstSlot + local, from: bytes)
            memory.pin(s.firstSlot + local)
            s.meta[local] = SlotMeta(key: key, freq: 0, live: true)
            s.map[key] = local
            if seenBefore {
                s.main.push(local)
            } else {
                s.small.push(local)
            }
            return s.firstSlot + local
        }
    }

    func drop(where match: (BlockKey) -> Bool) {
        state.withLock { s in
            for local in s.meta.indices where s.meta[local].live && match(s.meta[local].key) {
                s.map[s.meta[local].key] = nil
                s.meta[local].live = false
            }
        }
    }

    func stats() -> (used: Int, hits: UInt64, misses: UInt64, evictions: UInt64) {
        state.withLock { s in (s.map.count, s.hits, s.misses, s.evictions) }
    }
}

struct SlotMeta {
    var key = BlockKey(file: 0, block: 0)
    var freq: UInt8 = 0
    /// False for a never-used or dropped slot: it can be reused at once.
    var live = false
}

struct ShardState {
    let firstSlot: Int
    var map: BlockTable
    var meta: [SlotMeta]
    /// Never-used slots; dropped slots stay in their queue and are reused when they reach its head.
    var unused: [Int]
    var small: SlotRing
    var main: SlotRing
    var ghost: GhostSet
    let smallTarget: Int
    var hits: UInt64 = 0
    var misses: UInt64 = 0
    var evictions: UInt64 = 0

    init(firstSlot: Int, count: Int) {
        self.firstSlot = firstSlot
        map = BlockTable(capacity: count)
        meta = Array(repeating: SlotMeta(), count: count)
        unused = Array((0..<count).reversed())
        small = SlotRing(capacity: count)
        main = SlotRing(capacity: count)
        ghost = GhostSet(capacity: count)
        smallTarget = Swift.max(1, count / 10)
    }

    mutating func takeFreeSlot(memory: SlotMemory) -> Int? {
        if let s = unused.popLast() { return s }
        // Every slot sits in exactly one queue; bound the walk so pinned slots cannot spin us.
        var budget = 4 * meta.count + 8
        while budget > 0 {
            budget -= 1
            if small.count > smallTarget || main.count == 0 {
                guard let s = small.pop() else { return nil }
                if memory.isPinned(firstSlot + s) { main.push(s); continue }
                if !meta[s].live { return s }
                if meta[s].freq > 0 {
                    meta[s].freq = 0
                    main.push(s)
                    continue
                }
                ghost.insert(meta[s].key)
                return evict(s)
            } else {
                guard let s = main.pop() else { return nil }
                if memory.isPinned(firstSlot + s) { main.push(s); continue }
                if !meta[s].live { return s }
                if meta[s].freq > 0 {
                    meta[s].freq -= 1
                    main.push(s)
                    continue
                }
                return evict(s)
            }
        }
        return nil
    }

    private mutating func evict(_ s: Int) -> Int {
        map[meta[s].key] = nil
        meta[s].live = false
        evictions += 1
        return s
    }
}

/// A fixed-capacity FIFO of slot indices.
struct SlotRing {
    private var items: [Int]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) { items = Array(repeating: 0, count: Swift.max(1, capacity)) }

    mutating func push(_ v: Int) {
        precondition(count < items.count, "slot ring overflow: a slot is in two queues")
        items[(head + count) % items.count] = v
        count += 1
    }

    mutating func pop() -> Int? {
        guard count > 0 else { return nil }
        let v = items[head]
        head = (head + 1) % items.count
        count -= 1
        return v
    }
}

/// Keys recently evicted from probation: seeing one again means it is not a scan.
struct GhostSet {
    private var order: [BlockKey?]
    private var head = 0
    private var members: Set<BlockKey> = []

    init(capacity: Int) { order = Array(repeating: nil, count: Swift.max(1, capacity)) }

    mutating func insert(_ key: BlockKey) {
        guard !members.contains(key) else { return }
        if let old = order[head] { members.remove(old) }
        order[head] = key
        head = (head + 1) % order.count
        members.insert(key)
    }

    /// Removes the key if present and says whether it was.
    mutating func remove(_ key: BlockKey) -> Bool { members.remove(key) != nil }
}
