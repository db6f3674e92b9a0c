#if canImport(Glibc)
import Glibc
#endif
/// A directory held open for its whole use, so that syncing it after a
/// create, rename or unlink needs no new descriptor: running out of
/// descriptors must never be the reason a directory cannot be synced.
public final class DirectoryHandle: Sendable {
    let fs: any FileSystem
    /// Relative to the filesystem's root ("" is the root itself).
    public let path: String
    private let fd: Int32

    init(fs: any FileSystem, path: String) throws(StorageError) {
        self.fs = fs
        self.path = path
        do throws(SystemError) { fd = try fs.open(path.isEmpty ? "." : path, .directory) } catch {
            throw .io(operation: "open directory", path: path, errno: error.errno)
        }
    }

    deinit { fs.close(fd) }

    /// The path of an entry of this directory.
    func child(_ name: String) -> String { path.isEmpty ? name : path + "/" + name }

    /// fsync of the directory: makes its entries durable. A failure stops
    /// the process, as for files.
    func sync() {
        do throws(SystemError) { try fs.fsync(fd) } catch {
            FatalIO.stop("fsync of directory \(FileLabel.describe(path)) failed: \(error)")
        }
    }

    /// The same, failing instead: for a directory that is not the data
    /// directory's (a file:// object store), whose failure fails one upload.
    func trySync() throws(StorageError) {
        do throws(SystemError) { try fs.fsync(fd) } catch {
            throw .io(operation: "fsync of directory", path: path, errno: error.errno)
        }
    }
}

/// Directory operations over a `FileSystem`.
enum Directory {
    /// Creates `path`; an existing directory is fine.
    static func create(_ fs: any FileSystem, _ path: String) throws(StorageError) {
        do throws(SystemError) { try fs.mkdir(path) } catch {
            if error.errno == EEXIST, isDirectory(fs, path) { return }
            throw .io(operation: "mkdir", path: path, errno: error.errno)
        }
    }

    /// Creates `path` and every missing directory above it (mkdir -p).
    static func createAll(_ fs: any FileSystem, _ path: String) throws(StorageError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            try create(fs, prefix)
        }
    }

    /// Entry names, sorted.
    static func list(_ fs: any FileSystem, _ path: String) throws(StorageError) -> [String] {
        do throws(SystemError) { return try fs.list(path.isEmpty ? "." : path).sorted() } catch {
            throw .io(operation: "list", path: path, errno: error.errno)
        }
    }

    static func exists(_ fs: any FileSystem, _ path: String) -> Bool { (try? fs.stat(path)) != nil }

    static func fileSize(_ fs: any FileSystem, _ path: String) -> Int? { (try? fs.stat(path))?.size }

    static func isDirectory(_ fs: any FileSystem, _ path: String) -> Bool { (try? fs.stat(path))?.isDirectory == true }

    /// Removes a file; a missing one is fine.
    static func unlink(_ fs: any FileSystem, _ path: String) throws(StorageError) {
        do throws(SystemError) { try fs.unlink(path) } catch {
            if error.errno == ENOENT { return }
            throw .io(operation: "unlink", path: path, errno: error.errno)
        }
    }

    /// Removes a directory and everything below it, as far as it can.
    static func removeTree(_ fs: any FileSystem, _ path: String) {
        if isDirectory(fs, path) {
            for name in (try? fs.list(path)) ?? [] { removeTree(fs, path + "/" + name) }
            try? fs.rmdir(path)
        } else {
            try? fs.unlink(path)
        }
    }

    static func availableBytes(_ fs: any FileSystem, _ path: String) throws(StorageError) -> UInt64 {
        do throws(SystemError) { return try fs.availableBytes(path.isEmpty ? "." : path) } catch {
            throw .io(operation: "statvfs", path: path, errno: error.errno)
        }
    }
}
