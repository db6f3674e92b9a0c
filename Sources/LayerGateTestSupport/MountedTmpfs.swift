import Foundation

/// A real tmpfs for a test that must fill a real disk: mounted at `path`
/// (created if missing), unmounted by `unmount()` or when the value goes
/// away. Only root can mount one; without it `mount` says why and returns
/// nil, and the test skips. Unmount before the directory holding it is
/// removed: `defer { tmpfs.unmount(); withExtendedLifetime(dir) {} }`.
public final class MountedTmpfs {
    public let path: String
    private var mounted = true

    private init(path: String) { self.path = path }

    /// `size` as mount takes it ("24m"); `test` names the caller in the skip message.
    public static func mount(at path: String, size: String, test: String) -> MountedTmpfs? {
        guard getuid() == 0 else {
            print("skipped \(test): mounting a tmpfs needs root (uid \(getuid()))")
            return nil
        }
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0700", "tmpfs", path]) == 0 else {
            print("skipped \(test): mount -t tmpfs failed (no CAP_SYS_ADMIN here?)")
            return nil
        }
        return MountedTmpfs(path: path)
    }

    deinit { unmount() }

    public func unmount() {
        guard mounted else { return }
        mounted = false
        _ = Self.run("/usr/bin/umount", ["-l", path])
    }

    private static func run(_ tool: String, _ args: [String]) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }
}
