#if canImport(Glibc)
import Glibc
#endif
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
/// opens a descriptor for itself and closes it after. No lock is held across
/// an open, read or close.
public final class OpenFileTable: Sendable {
    public let capacity: Int
    let fs: any FileSystem

    private struct Slot {
        var owner: UInt64 = 0
        var fd: Int32 = -1
        var users = 0
        var referenced = false
    }

    private struct State {
        var slots: [Slot]
        var slotOf: [UInt64: Int] = [:]
        var hand = 0
        var opens = 0
    }

    private let state: Mutex<State>
    private static let nextFileId = Atomic<UInt64>(1)

    public init(fs: any FileSystem, capacity: Int) {
        precondition(capacity >= 1, "the open file table needs a slot")
        self.fs = fs
        self.capacity = capacity
        state = Mutex(State(slots: Array(repeating: Slot(), count: capacity)))
    }

    /// Descriptors currently held in slots, and how many opens the table has done.
    public var stats: (open: Int, opens: Int) {
        state.withLock { s in (s.slotOf.count, s.opens) }
    }

    static func newFileId() -> UInt64 { nextFileId.add(1, ordering: .relaxed).newValue }

    /// Runs `body` with a descriptor of `file`, opening it when it has none.
    func withDescriptor<R>(_ file: VirtualFile, _ body: (Int32) throws(StorageError) -> R) throws(StorageError) -> R {
        if let fd = acquire(file.id) {
            defer { release(file.id) }
            return try body(fd)
        }
        let fd = try open(file)
        let (use, spare) = install(file.id, fd)
        if let spare { fs.close(spare) }
        guard let use else {
            // Every slot is busy: this read gets a descriptor of its own.
            defer { fs.close(fd) }
            return try body(fd)
        }
        defer { release(file.id) }
        return try body(use)
    }

    /// Runs `body` with the descriptor `file` holds in a slot; nil, without
    /// opening anything, when it holds none (an open may wait for the disk).
    func withOpenDescriptor<R>(_ file: VirtualFile, _ body: (Int32) -> R) -> R? {
        guard let fd = acquire(file.id) else { return nil }
        defer { release(file.id) }
        return body(fd)
    }

    /// Opens `file` for the first time (no slot yet) and returns what it is.
    func openFirst(_ path: String, id: UInt64) throws(StorageError) -> FileInfo {
        let fd: Int32
        do throws(SystemError) { fd = try fs.open(path, .readOnly) } catch {
            throw .io(operation: "open", path: path, errno: error.errno)
        }
        let info: FileInfo
        do throws(SystemError) { info = try fs.fstat(fd) } catch {
            fs.close(fd)
            throw .io(operation: "fstat", path: path, errno: error.errno)
        }
        state.withLock { $0.opens += 1 }
        let (use, spare) = install(id, fd)
        if let spare { fs.close(spare) }
        if use == nil { fs.close(fd) } else { release(id) }
        return info
    }

    /// Closes the file's descriptor, if it holds one (the file is gone for good).
    func forget(_ id: UInt64) {
        let fd = state.withLock { s -> Int32? in
            guard let i = s.slotOf.removeValue(forKey: id) else { return nil }
            precondition(s.slots[i].users == 0, "a layer file was dropped during a read")
            defer { s.slots[i] = Slot() }
            return s.slots[i].fd
        }
        if let fd { fs.close(fd) }
    }

    private func acquire(_ id: UInt64) -> Int32? {
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

    private func open(_ file: VirtualFile) throws(StorageError) -> Int32 {
        let fd: Int32
        do throws(SystemError) { fd = try fs.open(file.path, .readOnly) } catch {
            throw .io(operation: "open", path: file.path, errno: error.errno)
        }
        // The name must still be the file that was validated: a layer is never
        // rewritten, so anything else is damage from outside.
        let info = try? fs.fstat(fd)
        guard let info, info.isSameFile(as: file.identity), info.size == file.identity.size else {
            fs.close(fd)
            throw .corruptLayer(file: file.path, reason: "the file was replaced or changed size while open")
        }
        state.withLock { $0.opens += 1 }
        return fd
    }

    /// Puts `fd` in a slot for `id`, acquired once. Returns the descriptor to
    /// use (nil: no free slot, use `fd` uncached) and one to close.
    private func install(_ id: UInt64, _ fd: Int32) -> (use: Int32?, spare: Int32?) {
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

/// A layer file's identity for reads: its path, what it was when validated,
/// and a descriptor from the table when one is needed.
final class VirtualFile: Sendable {
    let id: UInt64
    let path: String
    let identity: FileInfo
    private let table: OpenFileTable
    /// A descriptor of the file's own, once its name is gone (an evicted
    /// layer): reads still in flight on it go on through this one.
    private let unnamed = Atomic<Int32>(-1)

    init(table: OpenFileTable, path: String) throws(StorageError) {
        self.table = table
        self.path = path
        id = OpenFileTable.newFileId()
        identity = try table.openFirst(path, id: id)
    }

    deinit {
        let fd = unnamed.load(ordering: .acquiring)
        if fd >= 0 { table.fs.close(fd) }
        table.forget(id)
    }

    var fs: any FileSystem { table.fs }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        let (fs, path) = (table.fs, self.path)
        if case let fd = unnamed.load(ordering: .acquiring), fd >= 0 {
            return try RawFile.read(fs, fd, path: path, into: buffer, at: offset)
        }
        do throws(StorageError) {
            try table.withDescriptor(self) { fd throws(StorageError) in
                try RawFile.read(fs, fd, path: path, into: buffer, at: offset)
            }
        } catch {
            // The name went away while this read reopened it: the file did not.
            let fd = unnamed.load(ordering: .acquiring)
            guard fd >= 0 else { throw error }
            try RawFile.read(fs, fd, path: path, into: buffer, at: offset)
        }
    }

    /// Fills `buffer` from `offset` if that needs no wait for the disk: the
    /// bytes are in the OS page cache and the file has a descriptor open.
    /// False when they are not (or the read fails: the blocking read says why).
    func readIfResident(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Bool {
        let fs = table.fs
        if case let fd = unnamed.load(ordering: .acquiring), fd >= 0 {
            return fs.preadIfResident(fd, into: buffer, at: offset) == buffer.count
        }
        return table.withOpenDescriptor(self) { fd in fs.preadIfResident(fd, into: buffer, at: offset) == buffer.count } ?? false
    }

    /// Opens a descriptor of the file's own, so that reads go on after its name
    /// is removed. False when none could be opened, or the name is another file now.
    func keepOpenWithoutName() -> Bool {
        if unnamed.load(ordering: .acquiring) >= 0 { return true }
        let fs = table.fs
        guard let fd = try? fs.open(path, .readOnly) else { return false }
        guard let info = try? fs.fstat(fd), info.isSameFile(as: identity) else {
            fs.close(fd)
            return false
        }
        if !unnamed.compareExchange(expected: -1, desired: fd, ordering: .acquiringAndReleasing).exchanged { fs.close(fd) }
        return true
    }

    func read(count: Int, at offset: Int) throws(StorageError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var failure: StorageError?
        out.withUnsafeMutableBytes { buf in
            do throws(StorageError) { try read(into: buf, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }
}
