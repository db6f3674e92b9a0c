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
    /// existing file, then fsyncs the directory. The temp file must already be fsynced.
    static func publish(directory: DirectoryHandle, temp: String, final: String, mechanism: Mechanism = .automatic)
        throws(StorageError)
    {
        let fs = directory.fs
        let tempPath = directory.child(temp)
        let finalPath = directory.child(final)
        if mechanism == .automatic {
            do throws(SystemError) {
                try fs.renameNoReplace(tempPath, finalPath)
                directory.sync()
                return
            } catch {
                if error.errno == EEXIST { throw .layerExists(file: finalPath) }
                guard error.errno == EINVAL || error.errno == ENOSYS else {
                    throw .io(operation: "rename", path: finalPath, errno: error.errno)
                }
            }
        }
        // link(2) fails with EEXIST rather than replacing, so the gate holds here too.
        do throws(SystemError) { try fs.link(tempPath, finalPath) } catch {
            if error.errno == EEXIST { throw .layerExists(file: finalPath) }
            throw .io(operation: "link", path: finalPath, errno: error.errno)
        }
        directory.sync()
        // The layer is published now; a temp name left by a failed unlink is swept at the next load.
        try? fs.unlink(tempPath)
        directory.sync()
    }
}
