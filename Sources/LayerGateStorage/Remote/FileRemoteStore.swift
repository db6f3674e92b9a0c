#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// `file:///DIR`: objects are files under DIR (an NFS mount, or a test's
/// directory), keys their paths below it. A layer object gets its name
/// through the same gate as a local layer file (`GatedPublish`), so a second
/// upload under a taken key can never replace the first.
public final class FileRemoteStore: RemoteStore {
    public let description: String
    private let directory: String
    private let tempCounter = Atomic<UInt64>(0)

    /// DIR must exist now; it is opened again for every call, so a DIR
    /// removed and made again (a remount) is the one written to.
    public init(directory: String) throws(RemoteError) {
        description = "file://" + directory
        self.directory = directory
        do throws(SystemError) { _ = try RealFileSystem(root: directory) } catch {
            throw .badConfiguration("cannot open \(directory): \(error)")
        }
    }

    /// DIR as it is now.
    private func root(_ operation: String, _ key: String) throws(RemoteError) -> RealFileSystem {
        do throws(SystemError) { return try RealFileSystem(root: directory) } catch {
            throw .failed(operation, key, "cannot open the store's directory: \(error)", errno: error.errno)
        }
    }

    public func head(_ key: String) throws(RemoteError) -> ObjectHead? {
        _ = try Self.split(key)
        let fs = try root("head", key)
        do throws(SystemError) {
            let info = try fs.stat(key)
            return info.isRegularFile ? ObjectHead(size: info.size, crc32c: nil) : nil
        } catch {
            if error.errno == ENOENT { return nil }
            throw .failed("head", key, error)
        }
    }

    /// Reads the object whole: a directory keeps no checksum, and bit rot keeps the size.
    public func verify(_ key: String, size: Int, crc32c: UInt32) throws(RemoteError) -> Bool {
        _ = try Self.split(key)
        let fs = try root("verify", key)
        do throws(StorageError) {
            let object = try LocalObject.measure(fs: fs, path: key)
            return object.size == size && object.crc32c == crc32c
        } catch {
            if case .io(_, _, let e) = error, e == ENOENT { return false }
            throw .failed("verify", key, error)
        }
    }

    public func putIfAbsent(_ key: String, from source: LocalObject) throws(RemoteError) -> RemotePut {
        let (dir, name) = try Self.split(key)
        let fs = try root("put", key)
        // Set where this server's layer failed (its open, a read, its checksum), not the store's copy.
        var sourceFailed = false
        let temp = try writeTemp(fs, dir: dir, name: name, failedLocally: { sourceFailed }) { (file: RawFile) throws(StorageError) -> Void in
            let input: RawFile
            do throws(StorageError) { input = try RawFile.open(source.fs, source.path, .readOnly) } catch {
                sourceFailed = true
                throw error
            }
            defer { input.close() }
            let crc: UInt32
            do throws(ObjectCopy.Failure) { crc = try ObjectCopy.copy(input, size: source.size, into: file) } catch {
                sourceFailed = error.reading
                throw error.error
            }
            // The file changed under us: what would be uploaded is not what was measured.
            guard crc == source.crc32c else {
                sourceFailed = true
                throw .corruptLayer(file: source.path, reason: "its checksum changed while it was uploaded")
            }
        }
        if try publish(fs, dir: dir, temp: temp, name: name, key: key) { return .created }
        let existing: LocalObject
        do throws(StorageError) { existing = try LocalObject.measure(fs: fs, path: key) } catch {
            throw .failed("read back", key, error)
        }
        return existing.size == source.size && existing.crc32c == source.crc32c ? .sameExists : .differentExists
    }

    public func replace(_ key: String, bytes: [UInt8]) throws(RemoteError) {
        let (dir, name) = try Self.split(key)
        let fs = try root("replace", key)
        let temp = try writeTemp(fs, dir: dir, name: name) { (file: RawFile) throws(StorageError) -> Void in try file.write(bytes, at: 0) }
        do throws(StorageError) {
            let handle = try DirectoryHandle(fs: fs, path: dir)
            do throws(SystemError) { try fs.rename(handle.child(temp), key) } catch {
                throw .io(operation: "rename", path: key, errno: error.errno)
            }
            try handle.trySync()
        } catch {
            try? fs.unlink(dir + "/" + temp)
            throw .failed("replace", key, error)
        }
    }

    public func create(_ key: String, bytes: [UInt8]) throws(RemoteError) -> Bool {
        let (dir, name) = try Self.split(key)
        let fs = try root("create", key)
        let temp = try writeTemp(fs, dir: dir, name: name) { (file: RawFile) throws(StorageError) -> Void in try file.write(bytes, at: 0) }
        return try publish(fs, dir: dir, temp: temp, name: name, key: key)
    }

    /// Gives `temp` the name `name` through the gate; false (the temp removed)
    /// when the name is taken. A failed directory fsync fails the call, not the server.
    private func publish(_ fs: RealFileSystem, dir: String, temp: String, name: String, key: String) throws(RemoteError) -> Bool {
        do throws(StorageError) {
            try GatedPublish.publish(directory: try DirectoryHandle(fs: fs, path: dir), temp: temp, final: name, failSyncs: true)
            return true
        } catch {
            try? fs.unlink(dir + "/" + temp)
            if case .layerExists = error { return false }
            throw .failed("publish", key, error)
        }
    }

    public func get(_ key: String, limit: Int) throws(RemoteError) -> [UInt8]? {
        _ = try Self.split(key)
        let fs = try root("get", key)
        do throws(StorageError) {
            let file = try RawFile.open(fs, key, .readOnly)
            defer { file.close() }
            return try file.readAll(limit: limit)
        } catch {
            if case .io(_, _, let e) = error, e == ENOENT { return nil }
            throw .failed("get", key, error)
        }
    }

    public func download(_ key: String, into local: any FileSystem, path: String) throws(RemoteError) -> LocalObject? {
        _ = try Self.split(key)
        let fs = try root("get", key)
        let input: RawFile
        do throws(StorageError) { input = try RawFile.open(fs, key, .readOnly) } catch {
            if case .io(_, _, let e) = error, e == ENOENT { return nil }
            throw .failed("get", key, error)
        }
        defer { input.close() }
        // Set where the store's file failed (its size, a read), not this server's copy.
        var storeFailed = false
        var created = false
        do throws(StorageError) {
            let size: Int
            do throws(StorageError) { size = try input.size() } catch {
                storeFailed = true
                throw error
            }
            let output = try RawFile.open(local, path, .createExclusive)
            created = true
            defer { output.close() }
            let crc: UInt32
            do throws(ObjectCopy.Failure) { crc = try ObjectCopy.copy(input, size: size, into: output) } catch {
                storeFailed = error.reading
                throw error.error
            }
            // Not `sync()`, which stops the server: a download that cannot be made durable is dropped, never published.
            try output.trySync()
            return LocalObject(fs: local, path: path, size: size, crc32c: crc)
        } catch {
            if created { try? local.unlink(path) }
            throw .failed("download", key, error, local: !storeFailed)
        }
    }

    public func list(prefix: String) throws(RemoteError) -> [String] {
        guard prefix.hasSuffix("/"), !prefix.hasPrefix("/"), !prefix.split(separator: "/").contains("..") else {
            throw .badConfiguration("bad listing prefix '\(prefix)'")
        }
        let dir = String(prefix.dropLast())
        let fs = try root("list", prefix)
        do throws(SystemError) {
            let names = try fs.list(dir)
            sweepStaleTemps(dir, names.filter { $0.contains(".___temp.") })
            return names.filter { !$0.contains(".___temp") }.map { prefix + $0 }
        } catch {
            if error.errno == ENOENT { return [] }
            throw .failed("list", prefix, error)
        }
    }

    public func delete(_ key: String) throws(RemoteError) {
        let (dir, _) = try Self.split(key)
        let fs = try root("delete", key)
        do throws(StorageError) {
            let handle = try DirectoryHandle(fs: fs, path: dir)
            do throws(SystemError) { try fs.unlink(key) } catch {
                if error.errno == ENOENT { return }
                throw .io(operation: "unlink", path: key, errno: error.errno)
            }
            try handle.trySync()
        } catch {
            throw .failed("delete", key, error)
        }
    }

    /// How old a temp file must be before a listing removes it: an upload
    /// that crashed left it, as no upload of a layer takes this long.
    static let staleTempSeconds = 3600

    /// Removes the temp files among `names` (in `dir`) that no upload has
    /// touched for `staleTempSeconds`: leftovers of a process that crashed
    /// mid-upload, here or on another host sharing the directory.
    private func sweepStaleTemps(_ dir: String, _ names: [String]) {
        guard !names.isEmpty else { return }
        let now = time(nil)
        for name in names {
            let path = directory + "/" + dir + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
                  now - st.st_mtim.tv_sec > Self.staleTempSeconds else { continue }
            unlink(path)
        }
    }

    /// A new temp file next to `name` in `dir` (created with its parents),
    /// filled by `fill` and fsynced; its name, or nothing left behind on failure.
    /// `failedLocally`, asked on failure: the call that failed was on this server's own files.
    private func writeTemp(_ fs: RealFileSystem, dir: String, name: String, failedLocally: () -> Bool = { false },
                           _ fill: (RawFile) throws(StorageError) -> Void) throws(RemoteError) -> String {
        let temp = "\(name).___temp.\(getpid()).\(tempCounter.add(1, ordering: .relaxed).newValue)"
        let path = dir + "/" + temp
        do throws(StorageError) {
            try Directory.createAll(fs, dir)
            let file = try RawFile.open(fs, path, .createExclusive)
            defer { file.close() }
            try fill(file)
            // Not `file.sync()`: an object store that cannot sync fails the upload, not the server.
            try file.trySync()
            return temp
        } catch {
            try? fs.unlink(path)
            throw .failed("write", dir + "/" + name, error, local: failedLocally())
        }
    }

    /// The directory and name of a key; keys are made by this server, but a
    /// key that could leave DIR is refused all the same.
    private static func split(_ key: String) throws(RemoteError) -> (String, String) {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, !key.hasPrefix("/"), parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw .badConfiguration("bad object key '\(key)'")
        }
        return (parts.dropLast().joined(separator: "/"), String(parts[parts.count - 1]))
    }
}
