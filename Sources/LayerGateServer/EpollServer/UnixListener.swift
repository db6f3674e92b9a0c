import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The server's listening Unix socket, for either event loop.
enum UnixListener {
    /// `path` as a socket address, or nil when longer than a Unix socket allows.
    static func address(_ path: String) -> sockaddr_un? {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { dst in
            for (i, b) in bytes.enumerated() { dst[i] = b }
        }
        return addr
    }

    /// A non-blocking socket listening at `path`: a stale socket file there is
    /// replaced (the caller checked that no server answers on it), any other
    /// file is not. Bound under a tight umask, then opened up to `mode`.
    static func listen(path: String, mode: UInt16, backlog: Int32 = 256) throws(ServerError) -> Int32 {
        guard var addr = address(path) else {
            throw ServerError.socket("socket path \(path): longer than the \(MemoryLayout<sockaddr_un>.size - 3) bytes a Unix socket allows")
        }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else { throw ServerError.socket("\(path) exists and is not a socket; refusing to replace it") }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError.socket("socket: \(String(cString: strerror(errno)))") }
        let old = umask(0o177)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindErrno = errno
        umask(old)
        guard bound == 0 else {
            close(fd)
            throw ServerError.socket("bind \(path): \(String(cString: strerror(bindErrno)))")
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw ServerError.socket("listen \(path): \(String(cString: strerror(e)))")
        }
        guard chmod(path, mode_t(mode)) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw ServerError.socket("chmod \(path): \(String(cString: strerror(e)))")
        }
        return fd
    }
}
