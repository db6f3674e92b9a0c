import Dispatch
import Synchronization

/// One layer of a tenant's layer map: its name and size always, its open
/// file while the layer is local.
///
/// With remote storage a layer that is safe in the store may be evicted: its
/// file goes, its object stays. The first read that needs it again downloads
/// it (`LayerDownload`) and opens it as a new file with a new id, so blocks
/// cached from the old file can never be served as the new one's. Reads that
/// need the same missing layer at once share one download.
final class TenantLayer: Sendable {
    let descriptor: LayerDescriptor
    /// Without remote storage a layer is always local: its reader never changes
    /// and is read without a lock (the cache-hit path).
    private let fixed: LayerReader?
    private let download: LayerDownload?
    private let state: Mutex<State>
    /// `LayerClock` tick of the last read: eviction takes the least recent first.
    private let lastUse = Atomic<UInt64>(0)

    private enum Residence {
        case local(LayerReader)
        case remote
        case downloading(SharedResult)
    }

    private struct State {
        var residence: Residence
        /// An eviction under way, ended once its removal is done: a reset waits for it (`retire`).
        var eviction: DispatchGroup?
        /// Removed from the map (compaction, GC): a file it gets is deleted when unused.
        var deleted = false
        /// Its map was replaced by a reset's: the new map's layer of the same name owns the file now.
        var retired = false
        /// A download published the file but could not open it: the name is
        /// this layer's until a read opens the file, or the layer leaves the map.
        var leftover: FileInfo?

        /// The leftover this layer may remove: none once retired, the new map owns every name.
        var ownLeftover: FileInfo? { retired ? nil : leftover }
    }

    /// What a removal took from the state, to finish outside the lock.
    private enum Claimed {
        case reader(LayerReader)
        case leftover(FileInfo, SharedResult)
    }

    /// A layer whose file is open here.
    init(_ reader: LayerReader, download: LayerDownload?) {
        descriptor = reader.descriptor
        fixed = download == nil ? reader : nil
        self.download = download
        state = Mutex(State(residence: .local(reader)))
        touch()
    }

    /// A layer that index.json lists but whose file is only in remote storage.
    init(remote descriptor: LayerDescriptor, download: LayerDownload) {
        self.descriptor = descriptor
        fixed = nil
        self.download = download
        state = Mutex(State(residence: .remote))
    }

    /// The open file, if the layer is local now.
    var resident: LayerReader? {
        if let fixed { return fixed }
        return state.withLock { s in
            if case .local(let r) = s.residence { return r }
            return nil
        }
    }

    /// A failed open left its file under its name: local bytes until a read opens it or it is removed.
    var hasLeftover: Bool { state.withLock { $0.ownLeftover != nil } }

    /// Its bytes take local disk: an open file, or a failed open's leftover.
    /// What the local layer budget counts, and what a tenant's status shows as local.
    var hasLocalFile: Bool {
        if fixed != nil { return true }
        return state.withLock { s in
            if case .local = s.residence { return true }
            return s.ownLeftover != nil
        }
    }

    /// A download of it, or the removal of a failed open's leftover, is under way.
    var isDownloading: Bool {
        state.withLock { s in
            if case .downloading = s.residence { return true }
            return false
        }
    }

    /// The tick of its last read, for the eviction order.
    var lastUsed: UInt64 { lastUse.load(ordering: .relaxed) }

    /// The open file for a read: `.withoutWaiting` never downloads (the layer
    /// not being local is then `notCached`); `.mayReadDisk` downloads, blocking.
    func reader(policy: ReadPolicy) throws(ReadFailure) -> LayerReader {
        if let fixed { return fixed }
        touch()
        if let r = resident { return r }
        guard policy == .mayReadDisk else { throw .notCached(nil) }
        return try ReadFailure.lift { () throws(StorageError) in try local() }
    }

    /// The open file, downloaded first if need be. Blocks: call it on a read
    /// thread or a blocking-I/O thread.
    func local() throws(StorageError) -> LayerReader {
        if let fixed { return fixed }
        enum Step {
            case have(LayerReader)
            case wait(SharedResult)
            case fetch(SharedResult)
        }
        while true {
            let step = state.withLock { s -> Step in
                switch s.residence {
                case .local(let r): return .have(r)
                case .downloading(let shared): return .wait(shared)
                case .remote:
                    let shared = SharedResult()
                    s.residence = .downloading(shared)
                    return .fetch(shared)
                }
            }
            switch step {
            case .have(let r):
                return r
            case .wait(let shared):
                // Nil: the name a failed open left was being removed; a read now downloads afresh.
                if let result = shared.wait() { return try result.get() }
            case .fetch(let shared):
                return try fetch(shared)
            }
        }
    }

    /// Downloads the layer for the reads that wait on `shared`, which holds
    /// its residence until the outcome is in.
    private func fetch(_ shared: SharedResult) throws(StorageError) -> LayerReader {
        guard let download else { preconditionFailure("a layer without remote storage is never remote") }
        var published: FileInfo?
        let result = Result { () throws(StorageError) in try download.fetch(descriptor, published: &published) }
        let gone = state.withLock { s -> FileInfo? in
            switch result {
            case .success(let r):
                if s.deleted { r.deleteWhenUnused() }
                s.residence = .local(r)
                s.leftover = nil
                return nil
            case .failure:
                if let published { s.leftover = published }
                let gone = s.deleted ? takeLeftover(&s) : nil
                if gone == nil { s.residence = .remote }  // the next read tries again
                return gone
            }
        }
        if let gone { removeLeftover(gone) }
        shared.finish(result)
        return try result.get()
    }

    /// Removes the local file, keeping the layer readable from the store:
    /// its open file's name, or a failed open's leftover. The caller has
    /// checked that the store holds it. Returns the bytes freed (0 when it
    /// was not local, is being removed, or the file stays).
    func evict() -> Int {
        guard download != nil else { return 0 }
        let started = state.withLock { s -> (Claimed, DispatchGroup)? in
            guard s.eviction == nil, !s.deleted, !s.retired else { return nil }
            let claimed: Claimed
            switch s.residence {
            case .local(let r): claimed = .reader(r)
            case .remote:
                guard let (file, shared) = claimLeftover(&s) else { return nil }
                claimed = .leftover(file, shared)
            case .downloading: return nil
            }
            let eviction = DispatchGroup()
            eviction.enter()
            s.eviction = eviction
            return (claimed, eviction)
        }
        guard let (claimed, eviction) = started else { return 0 }
        defer {
            state.withLock { $0.eviction = nil }
            eviction.leave()  // after the state says how it ended
        }
        let removed: Bool
        switch claimed {
        case .leftover(let file, let shared):
            removed = removeLeftover(file)
            shared.finish(nil)
        case .reader(let reader):
            // Reads that hold the reader go on; new ones download again once the name is gone.
            removed = reader.removeName()
            if removed { state.withLock { $0.residence = .remote } }
        }
        return removed ? descriptor.size : 0
    }

    /// Its map is being replaced (a reset): it may no longer remove its file,
    /// which the new map opens under the same name. An eviction pass takes its
    /// layers before it removes any, so one may reach a layer of the old map
    /// after the reload; it would unlink a file the new map reads as local,
    /// and every read of that layer failed until the next restart. Returns
    /// the eviction under way, if one is: the reset waits for it to end
    /// before it loads (no later one starts).
    @discardableResult
    func retire() -> DispatchGroup? {
        state.withLock { s in
            s.retired = true
            return s.eviction
        }
    }

    /// The layer left the map: its file goes when the last read ends.
    /// Unlinks a file (a failed open's leftover): call it outside other locks.
    func deleteWhenUnused() {
        let claimed = state.withLock { s -> Claimed? in
            s.deleted = true
            switch s.residence {
            case .local(let r): return .reader(r)
            case .downloading: return nil  // its end sees `deleted`
            case .remote: return claimLeftover(&s).map { .leftover($0.0, $0.1) }
            }
        }
        switch claimed {
        case .reader(let r): r.deleteWhenUnused()
        case .leftover(let file, let shared):
            removeLeftover(file)
            shared.finish(nil)
        case nil: break
        }
    }

    /// Its map serves on after all: a reset that could not reload gave it back.
    func unretire() {
        state.withLock { $0.retired = false }
    }

    /// The file a failed open left, to remove now that the layer left the map;
    /// nil after a reset, whose new map owns every name. The caller keeps the
    /// residence `downloading` until `removeLeftover` has run.
    private func takeLeftover(_ s: inout State) -> FileInfo? {
        defer { s.leftover = nil }
        return s.ownLeftover
    }

    /// Takes a `remote` layer's leftover for removal. Reads wait until the
    /// name is gone (the residence is `downloading` until `removeLeftover`):
    /// one that opened the file meanwhile would lose its name under it.
    private func claimLeftover(_ s: inout State) -> (FileInfo, SharedResult)? {
        guard let file = takeLeftover(&s) else { return nil }
        let shared = SharedResult()
        s.residence = .downloading(shared)
        return (file, shared)
    }

    /// Unlinks the leftover, then lets reads download the layer afresh (or
    /// open the file, when it stayed: it is then recorded again). True when it went.
    @discardableResult
    private func removeLeftover(_ file: FileInfo) -> Bool {
        let removed = download?.removeLeftover(descriptor, file: file) ?? true
        state.withLock { s in
            s.residence = .remote
            if !removed { s.leftover = file }
        }
        return removed
    }

    private func touch() {
        let now = LayerClock.now
        if lastUse.load(ordering: .relaxed) != now { lastUse.store(now, ordering: .relaxed) }
    }

    /// One download's outcome, for the reads that wait for it; nil when
    /// there was none (a leftover's removal held the layer): look again.
    final class SharedResult: Sendable {
        private let done = DispatchGroup()
        private let result = Mutex<Result<LayerReader, StorageError>?>(nil)

        init() { done.enter() }

        func wait() -> Result<LayerReader, StorageError>? {
            done.wait()
            return result.withLock { $0 }
        }

        func finish(_ r: Result<LayerReader, StorageError>?) {
            result.withLock { $0 = r }
            done.leave()
        }
    }
}

/// A coarse clock for the eviction order: the evictor advances it once a
/// pass, so a read marks its layer with one relaxed load (and a store only
/// when the tick changed), never a clock call.
enum LayerClock {
    private static let tick = Atomic<UInt64>(1)

    static var now: UInt64 { tick.load(ordering: .relaxed) }

    static func advance() { tick.add(1, ordering: .relaxed) }
}
