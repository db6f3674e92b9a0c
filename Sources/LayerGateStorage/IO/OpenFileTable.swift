#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// A bounded set of open descriptors for layer files, shared by every layer
/// reader of the process (Neon's VirtualFile): a tenant with a thousand
/// layers holds at most `capacity` descriptors, not a thousand.
///
/// A reader keeps its `VirtualFile` for life; the descriptor behind it may be
/// closed when another file needs the slot (clock eviction) and is opened again
/// on the next read. Reopening keeps the file's identity, and with it its page
/// cache id, because a published layer file is never rewritten; the reopened
/// descriptor is checked to be the same inode, so a replaced file is an error,
/// never other bytes.
///
/// A slot in use by a read is never evicted; when every slot is in use, a read
/// opens a descriptor for itself and closes it after. Such loose descriptors
/// (and one opened on its way into a slot) are `looseLimit` at most: past it a
/// read waits for one to close, so that the process's descriptors stay within
/// what the server shared out (a table full of them fails connections and
/// WAL rolls). No lock is held across an open, read, close or that wait.
/// Half of `looseLimit` (one at least) is kept for the descriptors of files
/// whose name an eviction removed while a reader still holds them (`unnamed`):
/// a compaction holds every input at once, and an eviction pass over them
/// once gave each a descriptor of its own, 29 at `--nofile=56`, until the
/// table was full. Past that share a file keeps its name until a later pass.
///
/// With `directReads`, every descriptor reads past the OS page cache
/// (O_DIRECT) where the filesystem allows it: see `ReadDescriptor`.
public final class OpenFileTable: Sendable {
    public let capacity: Int
    let fs: any FileSystem
    /// Descriptors are opened for direct reads (`O_DIRECT`) where the filesystem takes them.
    public let directReads: Bool

    private struct Slot {
        var owner: UInt64 = 0
        var fd = ReadDescriptor.none
        var users = 0
        var referenced = false
    }

    private struct State {
        var slots: [Slot]
        var slotOf: [UInt64: Int] = [:]
        var hand = 0
        var opens = 0
        var fallbacks = 0
    }

    private let state: Mutex<State>
    private static let nextFileId = Atomic<UInt64>(1)
    /// Permits for loose descriptors; nil: no limit. Why a semaphore: its
    /// holders only open, read and close, and never wait for another, so a
    /// read waiting here always gets one.
    private let loose: DispatchSemaphore?
    /// Descriptors of files without a name that readers still hold.
    private let unnamed: CountedShare

    public init(fs: any FileSystem, capacity: Int, looseLimit: Int? = nil, directReads: Bool = false) {
        precondition(capacity >= 1, "the open file table needs a slot")
        self.fs = fs
        self.capacity = capacity
        self.directReads = directReads
        let unnamedLimit = looseLimit.map { max(1, $0 / 2) }
        unnamed = CountedShare(capacity: unnamedLimit ?? .max)
        loose = looseLimit.map { DispatchSemaphore(value: max(1, $0 - (unnamedLimit ?? 0))) }
        state = Mutex(State(slots: Array(repeating: Slot(), count: capacity)))
    }

    /// Descriptors currently held in slots, how many opens the table has
    /// done, how many of the held descriptors read directly, and how many
    /// files fell back to the OS page cache when a direct read was refused.
    public var stats: (open: Int, opens: Int, direct: Int, fallbacks: Int) {
        state.withLock { s in (s.slotOf.count, s.opens, s.slotOf.values.count { s.slots[$0].fd.direct }, s.fallbacks) }
    }

    static func newFileId() -> UInt64 { nextFileId.add(1, ordering: .relaxed).newValue }

    /// Runs `body` with a descriptor of `file`, opening it when it has none.
    func withDescriptor<R>(_ file: VirtualFile, _ body: (ReadDescriptor) throws(StorageError) -> R) throws(StorageError) -> R {
        if let fd = acquire(file.id) {
            defer { release(file.id) }
            return try body(fd)
        }
        loose?.wait()
        let fd: ReadDescriptor
        do throws(StorageError) { fd = try open(file) } catch {
            loose?.signal()
            throw error
        }
        let (use, spare) = install(file.id, fd)
        if let spare { fs.close(spare.fd) }
        guard let use else {
            // Every slot is busy: this read gets a descriptor of its own.
            defer {
                fs.close(fd.fd)
                loose?.signal()
            }
            return try body(fd)
        }
        loose?.signal()  // in a slot now, or closed (another read had opened the file)
        defer { release(file.id) }
        return try body(use)
    }

    /// Runs `body` with the descriptor `file` holds in a slot; nil, without
    /// opening anything, when it holds none (an open may wait for the disk).
    func withOpenDescriptor<R>(_ file: VirtualFile, _ body: (ReadDescriptor) -> R) -> R? {
        guard let fd = acquire(file.id) else { return nil }
        defer { release(file.id) }
        return body(fd)
    }

    /// Opens `file` for the first time (no slot yet) and returns what it is.
    func openFirst(_ path: String, id: UInt64) throws(StorageError) -> FileInfo {
        loose?.wait()
        defer { loose?.signal() }  // by then in a slot, or closed
        let fd = try openDescriptor(path)
        let info: FileInfo
        do throws(SystemError) { info = try fs.fstat(fd.fd) } catch {
            fs.close(fd.fd)
            throw .io(operation: "fstat", path: path, errno: error.errno)
        }
        state.withLock { $0.opens += 1 }
        let (use, spare) = install(id, fd)
        if let spare { fs.close(spare.fd) }
        if use == nil { fs.close(fd.fd) } else { release(id) }
        return info
    }

    /// Opens `path` read-only, for direct reads when the table asks for them,
    /// `direct` allows (false: the file refused them before) and the filesystem takes them.
    func openDescriptor(_ path: String, direct: Bool = true) throws(StorageError) -> ReadDescriptor {
        let fd: Int32
        do throws(SystemError) { fd = try fs.open(path, .readOnly) } catch {
            throw .io(operation: "open", path: path, errno: error.errno)
        }
        return ReadDescriptor(fd: fd, direct: directReads && direct && fs.bypassPageCache(fd, true))
    }

    /// Takes room for the descriptor of a file whose name is about to go
    /// while readers hold it; false when the share is taken.
    func reserveUnnamed() -> Bool { unnamed.take() }

    func releaseUnnamed() { unnamed.give() }

    /// Closes the file's descriptor, if it holds one (the file is gone for good).
    func forget(_ id: UInt64) {
        let fd = state.withLock { s -> Int32? in
            guard let i = s.slotOf.removeValue(forKey: id) else { return nil }
            precondition(s.slots[i].users == 0, "a layer file was dropped during a read")
            defer { s.slots[i] = Slot() }
            return s.slots[i].fd.fd
        }
        if let fd { fs.close(fd) }
    }

    /// A file refused a direct read: counted once per file.
    func countFallback() { state.withLock { $0.fallbacks += 1 } }

    /// Descriptor `fd` of file `id` no longer reads directly (O_DIRECT is off
    /// on it): so says its slot, if the slot holds that very descriptor (a
    /// read that fell back may hold one of its own while the slot has another).
    func readsBuffered(_ id: UInt64, fd: Int32) {
        state.withLock { s in
            guard let i = s.slotOf[id], s.slots[i].fd.fd == fd else { return }
            s.slots[i].fd.direct = false
        }
    }

    private func acquire(_ id: UInt64) -> ReadDescriptor? {
        state.withLock { s in
            guard let i = s.slotOf[id] else { return nil }
            s.slots[i].users += 1
            s.slots[i].referenced = true
            return s.slots[i].fd
        }
    }

    private func release(_ id: UInt64) {
        state.withLock { s in
            guard let i = s.slotOf[id] else { preconditionFailure("release of a file without a slot") }
            s.slots[i].users -= 1
        }
    }

    private func open(_ file: VirtualFile) throws(StorageError) -> ReadDescriptor {
        let fd = try openDescriptor(file.path, direct: !file.refusedDirectReads)
        // The name must still be the file that was validated: a layer is never
        // rewritten, so anything else is damage from outside.
        let info = try? fs.fstat(fd.fd)
        guard let info, info.isSameFile(as: file.identity), info.size == file.identity.size else {
            fs.close(fd.fd)
            throw .corruptLayer(file: file.path, reason: "the file was replaced or changed size while open")
        }
        state.withLock { $0.opens += 1 }
        return fd
    }

    /// Puts `fd` in a slot for `id`, acquired once. Returns the descriptor to
    /// use (nil: no free slot, use `fd` uncached) and one to close.
    private func install(_ id: UInt64, _ fd: ReadDescriptor) -> (use: ReadDescriptor?, spare: ReadDescriptor?) {
        state.withLock { s in
            if let i = s.slotOf[id] {
                // Another read opened it meanwhile: use that one.
                s.slots[i].users += 1
                s.slots[i].referenced = true
                return (s.slots[i].fd, fd)
            }
            var budget = 2 * s.slots.count
            while budget > 0 {
                budget -= 1
                let i = s.hand
                s.hand = (s.hand + 1) % s.slots.count
                if s.slots[i].users > 0 { continue }
                if s.slots[i].owner != 0 && s.slots[i].referenced {
                    s.slots[i].referenced = false
                    continue
                }
                let evicted = s.slots[i].owner != 0 ? s.slots[i].fd : nil
                if s.slots[i].owner != 0 { s.slotOf[s.slots[i].owner] = nil }
                s.slots[i] = Slot(owner: id, fd: fd, users: 1, referenced: true)
                s.slotOf[id] = i
                return (fd, evicted)
            }
            return (nil, nil)
        }
    }
}
