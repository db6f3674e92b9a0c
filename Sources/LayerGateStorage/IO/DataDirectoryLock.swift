#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// An exclusive lock on `<data-dir>/.lock` for the whole life of the process
/// that serves the directory: two servers on one data directory would both
/// append to the same WAL and both acknowledge writes that one then loses.
///
/// flock(2) on descriptors held open: the kernel drops the locks when the
/// process dies, however it dies, so there is never a stale lock to clean up.
/// The file holds the pid of the holder, for the message the next one
/// prints; the directory itself is locked too, so deleting `.lock` under a
/// running server does not let a second one in.
public final class DataDirectoryLock: Sendable {
    public static let fileName = ".lock"
    private let fd = Atomic<Int32>(-1)
    private let directoryFd = Atomic<Int32>(-1)

    /// Takes the lock, or throws `dataDirectoryLocked` naming the holder.
    public init(directory: String) throws(StorageError) {
        let deadline = ContinuousClock.now + .seconds(1)
        while true {
            do throws(StorageError) {
                try take(directory)
                return
            } catch .dataDirectoryLocked(let pid) where (pid == getpid() || pid == 0) && ContinuousClock.now < deadline {
                // This process's own lock, released a moment ago: a child it was spawning meanwhile
                // holds copies of the descriptors (and so the lock) until its exec closes them. A holder
                // that cannot be named (0: `.lock` gone or unreadable) may be that too: the full test
                // run once refused a directory whose `.lock` a test had removed, during another's spawn.
                usleep(5_000)
            }
        }
    }

    private func take(_ directory: String) throws(StorageError) {
        let dfd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw .io(operation: "open data directory", path: "", errno: errno) }
        guard flock(dfd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            Glibc.close(dfd)
            guard e == EWOULDBLOCK else { throw .io(operation: "flock", path: "", errno: e) }
            throw .dataDirectoryLocked(pid: Self.holder(directory))
        }
        directoryFd.store(dfd, ordering: .releasing)
        let path = directory + "/" + Self.fileName
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            release()
            throw .io(operation: "open", path: Self.fileName, errno: errno)
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            Glibc.close(fd)
            release()
            guard e == EWOULDBLOCK else { throw .io(operation: "flock", path: Self.fileName, errno: e) }
            throw .dataDirectoryLocked(pid: Self.holder(directory))
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd.store(fd, ordering: .releasing)
    }

    deinit { release() }

    /// Gives the lock up (also done at deinit and, by the kernel, at exit).
    public func release() {
        let file = fd.exchange(-1, ordering: .acquiringAndReleasing)
        if file >= 0 { Glibc.close(file) }
        let dir = directoryFd.exchange(-1, ordering: .acquiringAndReleasing)
        if dir >= 0 { Glibc.close(dir) }
    }

    /// The pid the holder wrote into `.lock` (0 when it is unreadable or gone).
    private static func holder(_ directory: String) -> Int32 {
        let fd = Glibc.open(directory + "/" + fileName, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return 0 }
        defer { Glibc.close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, $0.count, 0) }
        let text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
        return Int32(text.split(whereSeparator: \.isNewline).first.map(String.init) ?? "") ?? 0
    }
}
