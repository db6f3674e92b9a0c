#if canImport(Glibc)
import Glibc
#endif

/// The only way a layer file gets its final name: a rename that refuses to
/// overwrite. If the name is taken, the existing file keeps its bytes and the
/// caller gets `layerExists`; nothing else in the code renames onto a layer name.
enum GatedPublish {
    enum Mechanism: Sendable {
        /// renameat2(RENAME_NOREPLACE), falling back to link+unlink on EINVAL/ENOSYS.
        case automatic
        /// link+unlink only: what filesystems without RENAME_NOREPLACE get (tests force it).
        case linkUnlink
    }

    /// Moves `temp` to `final` (both in `directory`) without ever replacing an
    /// existing file, then fsyncs the directory. The temp file must already be
    /// fsynced. A failed directory fsync stops the process (the data
    /// directory's rule), or with `failSyncs` (an object store's directory) is
    /// thrown: the name may then be published, and a retry finds it taken.
    static func publish(directory: DirectoryHandle, temp: String, final: String, mechanism: Mechanism = .automatic,
                        failSyncs: Bool = false)
        throws(StorageError)
    {
        let fs = directory.fs
        func sync() throws(StorageError) {
            if failSyncs { try directory.trySync() } else { directory.sync() }
        }
        let tempPath = directory.child(temp)
        let finalPath = directory.child(final)
        if mechanism == .automatic {
            var renamed = false
            do throws(SystemError) {
                try fs.renameNoReplace(tempPath, finalPath)
                renamed = true
            } catch {
                if error.errno == EEXIST { throw .layerExists(file: finalPath) }
                guard error.errno == EINVAL || error.errno == ENOSYS else {
                    throw .io(operation: "rename", path: finalPath, errno: error.errno)
                }
            }
            if renamed { return try sync() }
        }
        // link(2) fails with EEXIST rather than replacing, so the gate holds here too.
        do throws(SystemError) { try fs.link(tempPath, finalPath) } catch {
            if error.errno == EEXIST { throw .layerExists(file: finalPath) }
            throw .io(operation: "link", path: finalPath, errno: error.errno)
        }
        try sync()
        // The layer is published now; a temp name left by a failed unlink is swept at the next load.
        try? fs.unlink(tempPath)
        try sync()
    }
}
