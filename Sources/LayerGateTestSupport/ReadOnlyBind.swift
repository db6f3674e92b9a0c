import Foundation
import Synchronization

/// A directory made read-only in place, as ext4 makes a whole filesystem
/// read-only after an I/O error: a bind mount of it over itself, remounted
/// read-only. Files opened before stay writable (they belong to the mount
/// beneath); every open, create or rename through the path fails with EROFS.
/// Only root can mount. `release()` (or the value going away) undoes it.
public final class ReadOnlyBind: Sendable {
    public let path: String
    private let mounted = Atomic<Bool>(true)

    private init(path: String) { self.path = path }

    /// Nil, after saying why the test `test` skips, when it cannot be made.
    public static func make(_ path: String, test: String) async throws -> ReadOnlyBind? {
        guard getuid() == 0 else {
            print("skipped \(test): a read-only bind mount needs root (uid \(getuid()))")
            return nil
        }
        guard try await runToExit("/usr/bin/mount", ["--bind", path, path]).status == 0 else {
            print("skipped \(test): mount --bind failed (no CAP_SYS_ADMIN here?)")
            return nil
        }
        let bind = ReadOnlyBind(path: path)
        guard try await runToExit("/usr/bin/mount", ["-o", "remount,bind,ro", path]).status == 0 else {
            print("skipped \(test): mount -o remount,bind,ro failed")
            return nil  // deinit takes the bind mount away
        }
        return bind
    }

    deinit { release() }

    /// Takes the bind mount away: the directory is writable again.
    public func release() {
        guard mounted.exchange(false, ordering: .relaxed) else { return }
        _ = runQuietly("/usr/bin/umount", ["-l", path])
    }
}
