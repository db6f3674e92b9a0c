#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

/// A file descriptor with its path, for errors that say which file.
/// Owns the descriptor: closed on `close()` or deinit.
final class RawFile: @unchecked Sendable {
    // @unchecked: `fd` is immutable after init; pread/pwrite on one fd are
    // safe from many threads, and close happens once, in deinit or close().
    let path: String
    private(set) var fd: Int32

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(StorageError) -> RawFile {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        return RawFile(fd: fd, path: path)
    }

    static func openReadOnly(_ path: String) throws(StorageError) -> RawFile {
        try open(path, flags: O_RDONLY)
    }

    /// Creates a new file; fails if the name exists.
    static func createExclusive(_ path: String) throws(StorageError) -> RawFile {
        try open(path, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    func size() throws(StorageError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(operation: "fstat", path: path, errno: errno) }
        return Int(st.st_size)
    }

    func inode() -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress!.advanced(by: done), buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { throw .io(operation: "pread (unexpected end of file)", path: path, errno: EIO) }
            done += n
        }
    }

    /// Exactly `count` bytes at `offset`, as a new array.
    func read(count: Int, at offset: Int) throws(StorageError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return out }
        // withUnsafeMutableBytes rethrows untyped errors: carry the typed one out.
        var failure: StorageError?
        out.withUnsafeMutableBytes { buf in
            do throws(StorageError) { try read(into: buf, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }

    func readAll() throws(StorageError) -> [UInt8] { try read(count: try size(), at: 0) }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress!.advanced(by: done), buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pwrite", path: path, errno: errno)
            }
            done += n
        }
    }

    func write(_ bytes: [UInt8], at offset: Int) throws(StorageError) {
        var failure: StorageError?
        bytes.withUnsafeBytes { buf in
            do throws(StorageError) { try write(buf, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    func truncate(to length: Int) throws(StorageError) {
        guard ftruncate(fd, off_t(length)) == 0 else { throw .io(operation: "ftruncate", path: path, errno: errno) }
    }

    /// fsync; a failure stops the process, because after a failed fsync the
    /// kernel may have dropped the dirty pages and a retry would lie.
    func sync() {
        while fsync(fd) != 0 {
            if errno == EINTR { continue }
            FatalIO.fsyncFailed(path: path, errno: errno)
        }
    }
}

enum FatalIO {
    static func fsyncFailed(path: String, errno e: Int32) -> Never {
        let msg = "layergate: fsync of \(path) failed: \(String(cString: strerror(e))); stopping (a retried fsync can lie)\n"
        StandardError.write(msg)
        abort()
    }
}

/// Directory operations that need a directory descriptor.
enum Directory {
    static func fsync(_ path: String) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { FatalIO.fsyncFailed(path: path, errno: errno) }
        defer { Glibc.close(fd) }
        while Glibc.fsync(fd) != 0 {
            if errno == EINTR { continue }
            FatalIO.fsyncFailed(path: path, errno: errno)
        }
    }

    static func create(_ path: String) throws(StorageError) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw .io(operation: "mkdir", path: path, errno: errno) }
    }

    /// Creates `path` and missing parents.
    static func createAll(_ path: String) throws(StorageError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            try create(prefix)
        }
    }

    static func list(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else { throw .io(operation: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    static func fileSize(_ path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func unlink(_ path: String) throws(StorageError) {
        if Glibc.unlink(path) != 0 && errno != ENOENT { throw .io(operation: "unlink", path: path, errno: errno) }
    }

    static func removeTree(_ path: String) {
        if isDirectory(path) {
            for name in (try? list(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            Glibc.unlink(path)
        }
    }
}
