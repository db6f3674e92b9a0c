#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Synchronization

/// The filesystem of the machine, rooted at a directory: relative paths are
/// resolved from the root's descriptor (openat and friends), so the engine
/// never needs to know, or print, where its data lives. Absolute paths work
/// too (tools and tests use them).
public final class RealFileSystem: FileSystem {
    private let root: Int32
    /// False once the filesystem answered that it cannot read without waiting.
    private let readsWithoutWaiting = Atomic<Bool>(true)

    /// Paths relative to the current directory, or absolute.
    public init() { root = AT_FDCWD }

    /// Paths relative to `directory`, which must exist.
    public init(root directory: String) throws(SystemError) {
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError(errno) }
        root = fd
    }

    deinit { if root >= 0 { Glibc.close(root) } }

    public func open(_ path: String, _ mode: OpenMode) throws(SystemError) -> Int32 {
        let flags: Int32
        switch mode {
        case .readOnly: flags = O_RDONLY | O_NONBLOCK
        case .readWrite: flags = O_RDWR
        case .createExclusive: flags = O_WRONLY | O_CREAT | O_EXCL
        case .createTruncate: flags = O_WRONLY | O_CREAT | O_TRUNC
        case .directory: flags = O_RDONLY | O_DIRECTORY
        }
        while true {
            let fd = openat(root, path, flags | O_CLOEXEC, 0o600)
            if fd >= 0 { return fd }
            if errno != EINTR { throw SystemError(errno) }
        }
    }

    public func close(_ fd: Int32) { _ = Glibc.close(fd) }

    public func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let n = Glibc.pread(fd, base, buffer.count, off_t(offset))
            if n >= 0 { return n }
            if errno != EINTR { throw SystemError(errno) }
        }
    }

    public func preadIfResident(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int? {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        guard readsWithoutWaiting.load(ordering: .relaxed) else { return nil }
        let n = lg_pread_nowait(fd, base, buffer.count, off_t(offset))
        if n >= 0 { return n }
        // A filesystem without it (tmpfs, FUSE) says so every time: stop asking. EAGAIN: not resident;
        // anything else: the blocking read will say what.
        if errno == EOPNOTSUPP { readsWithoutWaiting.store(false, ordering: .relaxed) }
        return nil
    }

    public func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let n = Glibc.pwrite(fd, base, buffer.count, off_t(offset))
            if n >= 0 { return n }
            if errno != EINTR { throw SystemError(errno) }
        }
    }

    public func fsync(_ fd: Int32) throws(SystemError) {
        while Glibc.fsync(fd) != 0 { if errno != EINTR { throw SystemError(errno) } }
    }

    public func fdatasync(_ fd: Int32) throws(SystemError) {
        while Glibc.fdatasync(fd) != 0 { if errno != EINTR { throw SystemError(errno) } }
    }

    public func truncate(_ fd: Int32, to length: Int) throws(SystemError) {
        while ftruncate(fd, off_t(length)) != 0 { if errno != EINTR { throw SystemError(errno) } }
    }

    public func fstat(_ fd: Int32) throws(SystemError) -> FileInfo {
        var st = Glibc.stat()
        guard Glibc.fstat(fd, &st) == 0 else { throw SystemError(errno) }
        return Self.info(st)
    }

    public func stat(_ path: String) throws(SystemError) -> FileInfo {
        var st = Glibc.stat()
        guard fstatat(root, path, &st, 0) == 0 else { throw SystemError(errno) }
        return Self.info(st)
    }

    public func renameNoReplace(_ from: String, _ to: String) throws(SystemError) {
        guard lg_rename_noreplace(root, from, root, to) == 0 else { throw SystemError(errno) }
    }

    public func rename(_ from: String, _ to: String) throws(SystemError) {
        guard renameat(root, from, root, to) == 0 else { throw SystemError(errno) }
    }

    public func link(_ from: String, _ to: String) throws(SystemError) {
        guard linkat(root, from, root, to, 0) == 0 else { throw SystemError(errno) }
    }

    public func unlink(_ path: String) throws(SystemError) {
        guard unlinkat(root, path, 0) == 0 else { throw SystemError(errno) }
    }

    public func mkdir(_ path: String) throws(SystemError) {
        guard mkdirat(root, path, 0o700) == 0 else { throw SystemError(errno) }
    }

    public func rmdir(_ path: String) throws(SystemError) {
        guard unlinkat(root, path, AT_REMOVEDIR) == 0 else { throw SystemError(errno) }
    }

    public func list(_ path: String) throws(SystemError) -> [String] {
        let fd = try open(path, .directory)
        guard let dir = fdopendir(fd) else {
            let e = errno
            Glibc.close(fd)
            throw SystemError(e)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func availableBytes(_ path: String) throws(SystemError) -> UInt64 {
        var s = statvfs()
        if root != AT_FDCWD && (path.isEmpty || path == ".") {
            // The root is held open: no descriptor needed, even when none is left.
            guard fstatvfs(root, &s) == 0 else { throw SystemError(errno) }
        } else {
            let fd = openat(root, path.isEmpty ? "." : path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError(errno) }
            defer { Glibc.close(fd) }
            guard fstatvfs(fd, &s) == 0 else { throw SystemError(errno) }
        }
        return UInt64(s.f_bavail) &* UInt64(s.f_frsize)
    }

    public var descriptorsAreReal: Bool { true }

    public func bypassPageCache(_ fd: Int32, _ on: Bool) -> Bool {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { return false }
        // EINVAL where the filesystem has no direct I/O (FUSE, some network filesystems).
        return fcntl(fd, F_SETFL, on ? flags | lg_o_direct() : flags & ~lg_o_direct()) == 0
    }

    private static func info(_ st: Glibc.stat) -> FileInfo {
        FileInfo(size: Int(st.st_size), device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
                 isDirectory: (st.st_mode & S_IFMT) == S_IFDIR, isRegularFile: (st.st_mode & S_IFMT) == S_IFREG)
    }
}
