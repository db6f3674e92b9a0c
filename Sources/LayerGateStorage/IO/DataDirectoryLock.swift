#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// An exclusive lock on `<data-dir>/.lock` for the whole life of the process
/// that serves the directory: two servers on one data directory would both
/// append to the same WAL and both acknowledge writes that one then loses.
///
/// flock(2) on a descriptor held open: the kernel drops it when the process
/// dies, however it dies, so there is never a stale lock to clean up. The
/// file holds the pid of the holder, for the message the next one prints.
public final class DataDirectoryLock: Sendable {
    public static let fileName = ".lock"
    private let fd = Atomic<Int32>(-1)

    /// Takes the lock, or throws `dataDirectoryLocked` naming the holder.
    public init(directory: String) throws(StorageError) {
        let path = directory + "/" + Self.fileName
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(operation: "open", path: Self.fileName, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            var buf = [UInt8](repeating: 0, count: 32)
            let n = buf.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, $0.count, 0) }
            Glibc.close(fd)
            guard e == EWOULDBLOCK else { throw .io(operation: "flock", path: Self.fileName, errno: e) }
            let text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
            let pid = Int32(text.split(whereSeparator: \.isNewline).first.map(String.init) ?? "") ?? 0
            throw .dataDirectoryLocked(pid: pid)
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, 0) }
        self.fd.store(fd, ordering: .releasing)
    }

    deinit { release() }

    /// Gives the lock up (also done at deinit and, by the kernel, at exit).
    public func release() {
        let fd = self.fd.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { Glibc.close(fd) }
    }
}
