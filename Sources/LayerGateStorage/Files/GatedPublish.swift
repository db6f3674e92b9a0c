#if canImport(Glibc)
import Glibc
#endif
import CSystemShims

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
    static func publish(directory: String, temp: String, final: String, mechanism: Mechanism = .automatic)
        throws(StorageError)
    {
        let tempPath = directory + "/" + temp
        let finalPath = directory + "/" + final
        if mechanism == .automatic {
            if lg_rename_noreplace(AT_FDCWD, tempPath, AT_FDCWD, finalPath) == 0 {
                Directory.fsync(directory)
                return
            }
            let e = errno
            if e == EEXIST { throw .layerExists(file: finalPath) }
            guard e == EINVAL || e == ENOSYS else { throw .io(operation: "renameat2", path: finalPath, errno: e) }
        }
        // link(2) fails with EEXIST rather than replacing, so the gate holds here too.
        if link(tempPath, finalPath) != 0 {
            let e = errno
            if e == EEXIST { throw .layerExists(file: finalPath) }
            throw .io(operation: "link", path: finalPath, errno: e)
        }
        Directory.fsync(directory)
        // The layer is published now; a temp name left by a failed unlink is swept at the next load.
        _ = Glibc.unlink(tempPath)
        Directory.fsync(directory)
    }
}
