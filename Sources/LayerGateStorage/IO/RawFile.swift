#if canImport(Glibc)
import Glibc
#endif
/// An open file of a `FileSystem`, with its path for errors that say which
/// file. Owns the descriptor: closed on `close()` or deinit.
final class RawFile: @unchecked Sendable {
    // @unchecked: `fd` changes only in close(), which callers do once, after
    // their last read or write; pread/pwrite on one fd are safe from many threads.
    let fs: any FileSystem
    let path: String
    private(set) var fd: Int32

    private init(fs: any FileSystem, fd: Int32, path: String) {
        self.fs = fs
        self.fd = fd
        self.path = path
    }

    deinit { if fd >= 0 { fs.close(fd) } }

    static func open(_ fs: any FileSystem, _ path: String, _ mode: OpenMode) throws(StorageError) -> RawFile {
        do throws(SystemError) {
            return RawFile(fs: fs, fd: try fs.open(path, mode), path: path)
        } catch {
            throw .io(operation: "open", path: path, errno: error.errno)
        }
    }

    func close() {
        if fd >= 0 { fs.close(fd) }
        fd = -1
    }

    func info() throws(StorageError) -> FileInfo {
        do throws(SystemError) { return try fs.fstat(fd) } catch { throw .io(operation: "fstat", path: path, errno: error.errno) }
    }

    func size() throws(StorageError) -> Int { try info().size }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try Self.read(fs, fd, path: path, into: buffer, at: offset)
    }

    /// The one loop that reads a whole range (pread may return less).
    static func read(_ fs: any FileSystem, _ fd: Int32, path: String, into buffer: UnsafeMutableRawBufferPointer,
                     at offset: Int) throws(StorageError) {
        var done = 0
        while done < buffer.count {
            let n: Int
            do throws(SystemError) {
                n = try fs.pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: offset + done)
            } catch {
                throw .io(operation: "read", path: path, errno: error.errno)
            }
            if n == 0 { throw .io(operation: "read (unexpected end of file)", path: path, errno: EIO) }
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

    /// The whole file, which must be a regular file of at most `limit` bytes
    /// (a sparse terabyte in place of an index must be an error, not an allocation).
    func readAll(limit: Int) throws(StorageError) -> [UInt8] {
        let info = try info()
        guard info.isRegularFile else { throw .io(operation: "read (not a regular file)", path: path, errno: EINVAL) }
        guard info.size <= limit else {
            throw .io(operation: "read (\(info.size) bytes, more than the \(ByteCount.describe(limit)) such a file may hold)",
                      path: path, errno: EFBIG)
        }
        return try read(count: info.size, at: 0)
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        var done = 0
        while done < buffer.count {
            do throws(SystemError) {
                let n = try fs.pwrite(fd, from: UnsafeRawBufferPointer(rebasing: buffer[done...]), at: offset + done)
                // A write that makes no progress and reports no error is a full device.
                guard n > 0 else { throw SystemError(ENOSPC) }
                done += n
            } catch {
                throw .io(operation: "write", path: path, errno: error.errno)
            }
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
        do throws(SystemError) { try fs.truncate(fd, to: length) } catch {
            throw .io(operation: "truncate", path: path, errno: error.errno)
        }
    }

    /// fsync; a failure stops the process, because after a failed fsync the
    /// kernel may have dropped the dirty pages and a retry would lie.
    func sync() {
        do throws(SystemError) { try fs.fsync(fd) } catch { FatalIO.stop("fsync of \(FileLabel.describe(path)) failed: \(error)") }
    }

    /// The same, failing instead: for a file nothing was acknowledged on yet
    /// (an object written to a file:// store, a download not yet published),
    /// which is dropped when its fsync fails.
    func trySync() throws(StorageError) {
        do throws(SystemError) { try fs.fsync(fd) } catch { throw .io(operation: "fsync", path: path, errno: error.errno) }
    }
}

/// The one way the engine stops the process: when continuing could
/// acknowledge or serve bytes that are not on disk.
enum FatalIO {
    static func stop(_ reason: String) -> Never {
        StandardError.write("layergate: \(reason); stopping (a retried fsync can lie)\n")
        abort()
    }
}
