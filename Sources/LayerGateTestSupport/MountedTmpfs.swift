import Foundation
import Synchronization

/// A real tmpfs, for a test (or `layergate torture`) that must fill a real
/// disk: mounted at `path` (created if missing), unmounted by `unmount()` or
/// when the value goes away. Only root can mount one. Unmount before the
/// directory holding it is removed:
/// `defer { tmpfs.unmount(); withExtendedLifetime(dir) {} }`.
public final class MountedTmpfs: Sendable {
    public let path: String
    private let mounted = Atomic<Bool>(true)

    private init(path: String) { self.path = path }

    /// Why no tmpfs could be mounted.
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    /// `size` as mount takes it ("24m"); `inodes` caps the files it can hold
    /// (a disk can run out of those with bytes to spare).
    public static func mount(at path: String, size: String, inodes: Int? = nil) -> Result<MountedTmpfs, Refusal> {
        guard getuid() == 0 else { return .failure(Refusal(description: "mounting a tmpfs needs root (uid \(getuid()))")) }
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let options = "size=\(size),mode=0700" + (inodes.map { ",nr_inodes=\($0)" } ?? "")
        guard runQuietly("/usr/bin/mount", ["-t", "tmpfs", "-o", options, "tmpfs", path]) == 0 else {
            return .failure(Refusal(description: "mount -t tmpfs failed (no CAP_SYS_ADMIN here?)"))
        }
        return .success(MountedTmpfs(path: path))
    }

    /// The same for a test: nil, after saying why the test `test` skips.
    public static func mount(at path: String, size: String, inodes: Int? = nil, test: String) -> MountedTmpfs? {
        switch mount(at: path, size: size, inodes: inodes) {
        case .success(let tmpfs): return tmpfs
        case .failure(let refusal):
            print("skipped \(test): \(refusal)")
            return nil
        }
    }

    deinit { unmount() }

    public func unmount() {
        guard mounted.exchange(false, ordering: .relaxed) else { return }
        _ = runQuietly("/usr/bin/umount", ["-l", path])
    }
}
