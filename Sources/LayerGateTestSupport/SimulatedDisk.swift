#if canImport(Glibc)
import Glibc
#endif
import LayerGateStorage
import Synchronization

/// An in-memory `FileSystem` with the durability rules of a real disk, for
/// tests that need what a real disk does not do on cue (Pebble's
/// `vfs.NewStrictMem` and `errorfs`, RocksDB's `FaultInjectionTestFS`):
///
/// - **Power loss.** `crashImage()` is the disk after the power went out:
///   a file keeps the bytes of its last fsync, a directory the entries of its
///   last fsync (a new file whose directory was not synced is gone, an
///   unsynced rename is undone). In `.torn` mode some unsynced writes survive
///   in part (4 KiB pieces, in any order, zeros in the holes) and a prefix of
///   the unsynced directory changes survives, as after a real crash.
/// - **Crash points.** `crash(atOperation:)`: the n-th mutating operation
///   (write, truncate, sync, create, rename, link, unlink, mkdir, rmdir) finds
///   the power gone. From then on every operation fails with EIO, except the
///   ones a dying process cannot be told about (fsync, truncate, close), which
///   do nothing: the process is dead, and its later acknowledgements are not
///   believed (`isCrashed`).
/// - **Faults.** `inject(_:)`: fail chosen operations with an errno (ENOSPC,
///   EIO, EMFILE…), by kind, by path, by count. `capacity` makes a full disk
///   the honest way; `maxOpenFiles` makes descriptors run out.
/// - **Direct I/O.** With `directIO`, descriptors take O_DIRECT
///   (`bypassPageCache`), and then refuse writes whose offset, length or
///   memory is not 4 KiB-aligned with EINVAL, as Linux does. Durability is
///   the same as for other writes: only an fsync makes them survive.
public final class SimulatedDisk: FileSystem {
    public enum Operation: String, Sendable, CaseIterable {
        case open, create, read, write, truncate, sync, rename, link, unlink, mkdir, rmdir, list, stat, statfs

        var isMutating: Bool {
            switch self {
            case .create, .write, .truncate, .sync, .rename, .link, .unlink, .mkdir, .rmdir: return true
            default: return false
            }
        }
    }

    /// Fails matching operations with `errno`: those of `operations` (all when
    /// empty) whose path contains `pathContains`, after `skip` matches, `count` times.
    public struct Fault: Sendable {
        public var operations: Set<Operation>
        public var pathContains: String?
        public var errno: Int32
        public var skip: Int
        public var count: Int

        public init(_ operations: Set<Operation> = [], pathContains: String? = nil, errno: Int32, skip: Int = 0,
                    count: Int = .max) {
            self.operations = operations
            self.pathContains = pathContains
            self.errno = errno
            self.skip = skip
            self.count = count
        }
    }

    public enum CrashMode: Sendable {
        /// Unsynced data and directory changes are all lost.
        case strict
        /// Some of them survive, in part (seeded).
        case torn(seed: UInt64)
    }

    private enum Pending {
        case write(offset: Int, bytes: [UInt8])
        case truncate(Int)
    }

    private enum DirChange {
        case set(String, Int)
        case remove(String)
    }

    // @unchecked: only touched under `state`'s lock.
    private final class Inode: @unchecked Sendable {
        let id: Int
        let isDirectory: Bool
        /// Names that refer to it now (a file's blocks are free at 0 when no descriptor holds it).
        var links = 0
        var data: [UInt8] = []
        var durable: [UInt8] = []
        var pending: [Pending] = []
        var entries: [String: Int] = [:]
        var durableEntries: [String: Int] = [:]
        var dirPending: [DirChange] = []

        init(id: Int, isDirectory: Bool) {
            self.id = id
            self.isDirectory = isDirectory
        }
    }

    private struct OpenFile {
        var inode: Int
        var writable: Bool
        var path: String
    }

    private struct State {
        var inodes: [Int: Inode] = [:]
        var nextInode = 1
        var fds: [Int32: OpenFile] = [:]
        var nextFd: Int32 = 3
        var mutations = 0
        var crashAt: Int?
        var crashed = false
        var crashedOn: String?
        var faults: [Fault] = []
        var faultHits: [Int] = []
        var injected = 0
        var capacity: Int?
        var maxOpenFiles: Int?
        var operationLog: [String: Int] = [:]
        var directIO = false
        var directAlignment = directIOAlignment
        var directFds: Set<Int32> = []
    }

    private let state = Mutex(State())
    private static let rootId = 0

    /// `directAlignment`: what a direct read or write must be aligned to. Linux
    /// asks for the device's logical block size: above 4 KiB (a 16 KiB-sector
    /// device) it refuses the I/O the engine aligns to `directIOAlignment`.
    public init(capacity: Int? = nil, directIO: Bool = false, directAlignment: Int = directIOAlignment) {
        state.withLock { s in
            s.inodes[Self.rootId] = Inode(id: Self.rootId, isDirectory: true)
            s.capacity = capacity
            s.directIO = directIO
            s.directAlignment = directAlignment
        }
    }

    /// Whether descriptors take O_DIRECT.
    public var directIO: Bool { state.withLock { $0.directIO } }

    // MARK: test controls

    /// Bytes the disk holds at most; a write beyond fails with ENOSPC.
    public var capacity: Int? {
        get { state.withLock { $0.capacity } }
        set { state.withLock { $0.capacity = newValue } }
    }

    public var maxOpenFiles: Int? {
        get { state.withLock { $0.maxOpenFiles } }
        set { state.withLock { $0.maxOpenFiles = newValue } }
    }

    public func inject(_ fault: Fault) {
        state.withLock { s in
            s.faults.append(fault)
            s.faultHits.append(0)
        }
    }

    public func clearFaults() { state.withLock { s in s.faults = []; s.faultHits = [] } }

    /// Faults that fired so far.
    public var injectedFaults: Int { state.withLock { $0.injected } }

    /// The power goes out at the n-th mutating operation from now (1 = the next).
    public func crash(atOperation n: Int) { state.withLock { $0.crashAt = $0.mutations + n } }

    /// Pulls the plug now.
    public func crashNow() { state.withLock { s in s.crashed = true; s.crashedOn = "crashNow" } }

    public var isCrashed: Bool { state.withLock { $0.crashed } }
    /// The operation the power went out on ("write tenants/…/wal/…").
    public var crashedOn: String? { state.withLock { $0.crashedOn } }
    /// Mutating operations so far.
    public var mutations: Int { state.withLock { $0.mutations } }
    public var openDescriptors: Int { state.withLock { $0.fds.count } }

    public var usedBytes: Int { state.withLock { Self.used($0) } }

    /// The disk as it is after a power loss now: a new disk holding what was
    /// durable (and, in `.torn` mode, pieces of what was not).
    public func crashImage(_ mode: CrashMode = .strict) -> SimulatedDisk {
        let image = SimulatedDisk(directIO: directIO, directAlignment: state.withLock { $0.directAlignment })
        state.withLock { s in
            var rng = SeededRandom(seed: { if case .torn(let seed) = mode { return seed }; return 0 }())
            let torn: Bool = { if case .torn = mode { return true }; return false }()
            var copied: [Int: Inode] = [:]
            func copy(_ id: Int) -> Int {
                if let done = copied[id] { return done.id }
                guard let old = s.inodes[id] else { return id }
                let new = Inode(id: id, isDirectory: old.isDirectory)
                copied[id] = new
                if old.isDirectory {
                    var entries = old.durableEntries
                    if torn, !old.dirPending.isEmpty {
                        for change in old.dirPending.prefix(Int(rng.next() % UInt64(old.dirPending.count + 1))) {
                            switch change {
                            case .set(let name, let inode): entries[name] = inode
                            case .remove(let name): entries[name] = nil
                            }
                        }
                    }
                    for (name, child) in entries {
                        new.entries[name] = copy(child)
                        copied[child]?.links += 1
                    }
                    new.durableEntries = new.entries
                } else {
                    var data = old.durable
                    if torn {
                        for p in old.pending {
                            switch p {
                            case .truncate(let n):
                                if rng.next() % 2 == 0 { Self.resize(&data, to: n) }
                            case .write(let offset, let bytes):
                                var piece = 0
                                while piece < bytes.count {
                                    let at = offset + piece
                                    let n = min(bytes.count - piece, 4096 - at % 4096)
                                    if rng.next() % 2 == 0 {
                                        if data.count < at + n { Self.resize(&data, to: at + n) }
                                        data.replaceSubrange(at..<at + n, with: bytes[piece..<piece + n])
                                    }
                                    piece += n
                                }
                            }
                        }
                    }
                    new.data = data
                    new.durable = data
                }
                return id
            }
            _ = copy(Self.rootId)
            copied[Self.rootId]?.links = 1
            image.state.withLock { t in
                t.inodes = copied
                t.nextInode = s.nextInode
            }
        }
        return image
    }

    /// Counts of each operation so far ("write": 120, …).
    /// A whole file's bytes (for tests and seed files).
    public func contents(of path: String) throws(SystemError) -> [UInt8] {
        let fd = try open(path, .readOnly)
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: try fstat(fd).size)
        let read = bytes.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try pread(fd, into: b, at: 0) } }
        _ = try read.get()
        return bytes
    }

    public var operationCounts: [String: Int] { state.withLock { $0.operationLog } }

    // MARK: FileSystem

    public func open(_ path: String, _ mode: OpenMode) throws(SystemError) -> Int32 {
        try withState(mode == .createExclusive || mode == .createTruncate ? .create : .open, path) { s throws(SystemError) in
            if let limit = s.maxOpenFiles, s.fds.count >= limit { throw SystemError(EMFILE) }
            let (parent, name) = try Self.parent(of: path, in: &s)
            var id = name.isEmpty ? parent.id : parent.entries[name]
            switch mode {
            case .createExclusive:
                guard id == nil else { throw SystemError(EEXIST) }
                id = Self.newInode(in: &s, directory: false, linkedAs: name, into: parent)
            case .createTruncate:
                if let existing = id, let inode = s.inodes[existing] {
                    guard !inode.isDirectory else { throw SystemError(EISDIR) }
                    inode.data = []
                    inode.pending.append(.truncate(0))
                } else {
                    id = Self.newInode(in: &s, directory: false, linkedAs: name, into: parent)
                }
            case .readOnly, .readWrite, .directory:
                guard let existing = id, let inode = s.inodes[existing] else { throw SystemError(ENOENT) }
                if mode == .directory && !inode.isDirectory { throw SystemError(ENOTDIR) }
                if mode == .readWrite && inode.isDirectory { throw SystemError(EISDIR) }
            }
            guard let inode = id else { throw SystemError(ENOENT) }
            let fd = s.nextFd
            s.nextFd += 1
            s.fds[fd] = OpenFile(inode: inode, writable: mode != .readOnly && mode != .directory, path: path)
            return fd
        }
    }

    public func close(_ fd: Int32) {
        state.withLock { s in
            _ = s.fds.removeValue(forKey: fd)
            s.directFds.remove(fd)
        }
    }

    public func bypassPageCache(_ fd: Int32, _ on: Bool) -> Bool {
        state.withLock { s in
            guard s.directIO, s.fds[fd] != nil else { return false }
            if on { s.directFds.insert(fd) } else { s.directFds.remove(fd) }
            return true
        }
    }

    public func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try withFile(.read, fd) { s, f, inode throws(SystemError) in
            guard offset >= 0 else { throw SystemError(EINVAL) }
            guard !inode.isDirectory else { throw SystemError(EISDIR) }
            // As Linux refuses it: a direct read of unaligned memory, length or offset.
            let a = s.directAlignment
            if s.directFds.contains(fd), offset % a != 0 || buffer.count % a != 0 || Int(bitPattern: buffer.baseAddress) % a != 0 {
                throw SystemError(EINVAL)
            }
            guard offset < inode.data.count else { return 0 }
            let n = min(buffer.count, inode.data.count - offset)
            inode.data.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n)
            }
            return n
        }
    }

    public func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try withFile(.write, fd) { s, f, inode throws(SystemError) in
            guard f.writable, offset >= 0 else { throw SystemError(EBADF) }
            let a = s.directAlignment
            if s.directFds.contains(fd), offset % a != 0 || buffer.count % a != 0 || Int(bitPattern: buffer.baseAddress) % a != 0 {
                throw SystemError(EINVAL)
            }
            let end = offset + buffer.count
            let growth = max(0, end - inode.data.count)
            if let capacity = s.capacity, growth > 0, Self.used(s) + growth > capacity { throw SystemError(ENOSPC) }
            if inode.data.count < end { Self.resize(&inode.data, to: end) }
            inode.data.withUnsafeMutableBytes { dst in
                if let src = buffer.baseAddress { (dst.baseAddress! + offset).copyMemory(from: src, byteCount: buffer.count) }
            }
            inode.pending.append(.write(offset: offset, bytes: Array(buffer)))
            return buffer.count
        }
    }

    public func fsync(_ fd: Int32) throws(SystemError) {
        try withFile(.sync, fd) { s, f, inode throws(SystemError) in
            if inode.isDirectory {
                inode.durableEntries = inode.entries
                inode.dirPending = []
            } else {
                inode.durable = inode.data
                inode.pending = []
            }
        }
    }

    public func fdatasync(_ fd: Int32) throws(SystemError) { try fsync(fd) }

    public func truncate(_ fd: Int32, to length: Int) throws(SystemError) {
        try withFile(.truncate, fd) { s, f, inode throws(SystemError) in
            guard f.writable, length >= 0 else { throw SystemError(EINVAL) }
            Self.resize(&inode.data, to: length)
            inode.pending.append(.truncate(length))
        }
    }

    public func fstat(_ fd: Int32) throws(SystemError) -> FileInfo {
        try withFile(.stat, fd) { s, f, inode throws(SystemError) in
            FileInfo(size: inode.data.count, device: 1, inode: UInt64(inode.id), isDirectory: inode.isDirectory)
        }
    }

    public func stat(_ path: String) throws(SystemError) -> FileInfo {
        try withState(.stat, path) { s throws(SystemError) in
            let inode = try Self.lookup(path, in: &s)
            return FileInfo(size: inode.data.count, device: 1, inode: UInt64(inode.id), isDirectory: inode.isDirectory)
        }
    }

    public func renameNoReplace(_ from: String, _ to: String) throws(SystemError) {
        try withState(.rename, from) { s throws(SystemError) in
            let (dst, dstName) = try Self.parent(of: to, in: &s)
            guard dst.entries[dstName] == nil else { throw SystemError(EEXIST) }
            try Self.move(from, to: dst, as: dstName, in: &s)
        }
    }

    public func rename(_ from: String, _ to: String) throws(SystemError) {
        try withState(.rename, from) { s throws(SystemError) in
            let (dst, dstName) = try Self.parent(of: to, in: &s)
            let moving = try Self.lookup(from, in: &s)
            if let existing = dst.entries[dstName], let target = s.inodes[existing] {
                if target.isDirectory && !target.entries.isEmpty { throw SystemError(ENOTEMPTY) }
                if target.isDirectory != moving.isDirectory { throw SystemError(moving.isDirectory ? ENOTDIR : EISDIR) }
            }
            try Self.move(from, to: dst, as: dstName, in: &s)
        }
    }

    public func link(_ from: String, _ to: String) throws(SystemError) {
        try withState(.link, to) { s throws(SystemError) in
            let source = try Self.lookup(from, in: &s)
            guard !source.isDirectory else { throw SystemError(EPERM) }
            let (dst, name) = try Self.parent(of: to, in: &s)
            guard dst.entries[name] == nil else { throw SystemError(EEXIST) }
            source.links += 1
            dst.entries[name] = source.id
            dst.dirPending.append(.set(name, source.id))
        }
    }

    public func unlink(_ path: String) throws(SystemError) {
        try withState(.unlink, path) { s throws(SystemError) in
            let (dir, name) = try Self.parent(of: path, in: &s)
            guard let id = dir.entries[name], let inode = s.inodes[id] else { throw SystemError(ENOENT) }
            guard !inode.isDirectory else { throw SystemError(EISDIR) }
            inode.links -= 1
            dir.entries[name] = nil
            dir.dirPending.append(.remove(name))
        }
    }

    public func mkdir(_ path: String) throws(SystemError) {
        try withState(.mkdir, path) { s throws(SystemError) in
            let (dir, name) = try Self.parent(of: path, in: &s)
            guard !name.isEmpty, dir.entries[name] == nil else { throw SystemError(EEXIST) }
            _ = Self.newInode(in: &s, directory: true, linkedAs: name, into: dir)
        }
    }

    public func rmdir(_ path: String) throws(SystemError) {
        try withState(.rmdir, path) { s throws(SystemError) in
            let (dir, name) = try Self.parent(of: path, in: &s)
            guard let id = dir.entries[name], let inode = s.inodes[id] else { throw SystemError(ENOENT) }
            guard inode.isDirectory else { throw SystemError(ENOTDIR) }
            guard inode.entries.isEmpty else { throw SystemError(ENOTEMPTY) }
            inode.links -= 1
            dir.entries[name] = nil
            dir.dirPending.append(.remove(name))
        }
    }

    public func list(_ path: String) throws(SystemError) -> [String] {
        try withState(.list, path) { s throws(SystemError) in
            if let limit = s.maxOpenFiles, s.fds.count >= limit { throw SystemError(EMFILE) }
            let inode = try Self.lookup(path, in: &s)
            guard inode.isDirectory else { throw SystemError(ENOTDIR) }
            return Array(inode.entries.keys)
        }
    }

    public func availableBytes(_ path: String) throws(SystemError) -> UInt64 {
        try withState(.statfs, path) { s throws(SystemError) in
            guard let capacity = s.capacity else { return 1 << 40 }
            return UInt64(max(0, capacity - Self.used(s)))
        }
    }

    // MARK: internals

    /// Runs one operation: counts it, crashes or faults it, then runs `body`.
    private func withState<R>(_ op: Operation, _ path: String, _ body: (inout State) throws(SystemError) -> R)
        throws(SystemError) -> R
    {
        try state.withLock { s throws(SystemError) -> R in
            guard try Self.admit(op, path, &s) else { throw SystemError(EIO) }
            return try body(&s)
        }
    }

    /// For fsync and truncate, which a dead process must not see fail (it
    /// would stop the test process, as it stops the server): after the crash
    /// they do nothing.
    private func withFile(_ op: Operation, _ fd: Int32, _ body: (inout State, OpenFile, Inode) throws(SystemError) -> Void)
        throws(SystemError)
    {
        try state.withLock { s throws(SystemError) in
            guard let f = s.fds[fd] else { throw SystemError(EBADF) }
            guard try Self.admit(op, f.path, &s) else {
                if op == .sync || op == .truncate { return }
                throw SystemError(EIO)
            }
            guard let inode = s.inodes[f.inode] else { throw SystemError(EBADF) }
            try body(&s, f, inode)
        }
    }

    private func withFile<R>(_ op: Operation, _ fd: Int32, _ body: (inout State, OpenFile, Inode) throws(SystemError) -> R)
        throws(SystemError) -> R
    {
        try state.withLock { s throws(SystemError) -> R in
            guard let f = s.fds[fd] else { throw SystemError(EBADF) }
            guard try Self.admit(op, f.path, &s) else { throw SystemError(EIO) }
            guard let inode = s.inodes[f.inode] else { throw SystemError(EBADF) }
            return try body(&s, f, inode)
        }
    }

    /// Counts the operation; false once the power is gone; throws an injected fault.
    private static func admit(_ op: Operation, _ path: String, _ s: inout State) throws(SystemError) -> Bool {
        s.operationLog[op.rawValue, default: 0] += 1
        if s.crashed { return false }
        if op.isMutating {
            s.mutations += 1
            if let at = s.crashAt, s.mutations >= at {
                s.crashed = true
                s.crashedOn = "\(op.rawValue) \(path)"
                return false
            }
        }
        for i in s.faults.indices {
            let f = s.faults[i]
            guard f.operations.isEmpty || f.operations.contains(op), f.pathContains.map({ path.contains($0) }) ?? true
            else { continue }
            s.faultHits[i] += 1
            if s.faultHits[i] > f.skip && s.faultHits[i] - f.skip <= f.count {
                s.injected += 1
                throw SystemError(f.errno)
            }
        }
        return true
    }

    /// Bytes of files that still have a name or a descriptor.
    private static func used(_ s: State) -> Int {
        let open = Set(s.fds.values.map(\.inode))
        return s.inodes.values.reduce(0) { $0 + ($1.links > 0 || open.contains($1.id) ? $1.data.count : 0) }
    }

    private static func resize(_ data: inout [UInt8], to n: Int) {
        if n < data.count {
            data.removeLast(data.count - n)
        } else if n > data.count {
            data.append(contentsOf: [UInt8](repeating: 0, count: n - data.count))
        }
    }

    private static func components(_ path: String) -> [Substring] {
        path.split(separator: "/").filter { $0 != "." }
    }

    private static func lookup(_ path: String, in s: inout State) throws(SystemError) -> Inode {
        guard var node = s.inodes[rootId] else { throw SystemError(EIO) }
        for part in components(path) {
            guard node.isDirectory else { throw SystemError(ENOTDIR) }
            guard let id = node.entries[String(part)], let next = s.inodes[id] else { throw SystemError(ENOENT) }
            node = next
        }
        return node
    }

    /// The directory that holds `path`, and the last component ("" for the root).
    private static func parent(of path: String, in s: inout State) throws(SystemError) -> (Inode, String) {
        var parts = components(path)
        guard let last = parts.popLast() else {
            guard let root = s.inodes[rootId] else { throw SystemError(EIO) }
            return (root, "")
        }
        let dir = try lookup(parts.joined(separator: "/"), in: &s)
        guard dir.isDirectory else { throw SystemError(ENOTDIR) }
        return (dir, String(last))
    }

    private static func newInode(in s: inout State, directory: Bool, linkedAs name: String, into dir: Inode) -> Int {
        let id = s.nextInode
        s.nextInode += 1
        let inode = Inode(id: id, isDirectory: directory)
        inode.links = 1
        s.inodes[id] = inode
        dir.entries[name] = id
        dir.dirPending.append(.set(name, id))
        return id
    }

    private static func move(_ from: String, to dst: Inode, as name: String, in s: inout State) throws(SystemError) {
        let (src, srcName) = try parent(of: from, in: &s)
        guard let id = src.entries[srcName] else { throw SystemError(ENOENT) }
        if let replaced = dst.entries[name], replaced != id { s.inodes[replaced]?.links -= 1 }
        src.entries[srcName] = nil
        src.dirPending.append(.remove(srcName))
        dst.entries[name] = id
        dst.dirPending.append(.set(name, id))
    }
}
