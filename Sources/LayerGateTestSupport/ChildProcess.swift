import Foundation
import Synchronization

/// A child process started as a shell starts one: no signal blocked, every
/// signal at its default action, only stdin, stdout and stderr inherited.
///
/// Foundation's `Process` passes on the spawning thread's signal mask, and a
/// test's thread is one of libdispatch's, which block SIGTERM among others:
/// such a moto_server ignored SIGTERM until the SIGKILL 5 s later, and a
/// layergated under test met its signals unlike one run from a shell.
/// Descriptors above stderr are closed in the child, so it cannot hold open
/// the pipe by which `Process` sees another child exit.
public final class ChildProcess: Sendable {
    public let processIdentifier: pid_t
    /// The wait status once reaped: the reaper sets it, every caller reads it.
    private let reaped = Mutex<Int32?>(nil)

    /// What one of the standard streams is connected to.
    public enum Stream: Sendable {
        case null
        /// Appended to, created 0600 if missing.
        case file(String)
    }

    public struct SpawnFailure: Error, CustomStringConvertible {
        public let executable: String
        public let errno: Int32
        public var description: String { "cannot start \(executable): \(String(cString: strerror(errno)))" }
    }

    /// Starts `executable` (a path) with `arguments`; `environment` nil inherits this process's.
    public init(executable: String, arguments: [String], environment: [String: String]? = nil,
                stdout: Stream = .null, stderr: Stream = .null) throws(SpawnFailure) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        for (fd, stream) in [(Int32(1), stdout), (Int32(2), stderr)] {
            switch stream {
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0)
            case .file(let path): posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            }
        }
        Self.closeFrom3(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        var pid = pid_t()
        let result = Self.withCStrings([executable] + arguments) { argv in
            Self.withCStrings(env) { envp in posix_spawn(&pid, executable, &actions, &attributes, argv, envp) }
        }
        guard result == 0 else { throw SpawnFailure(executable: executable, errno: result) }
        processIdentifier = pid
    }

    /// Kills and reaps a child nobody stopped, so none outlives its test.
    deinit {
        if isRunning {
            kill(processIdentifier, SIGKILL)
            waitUntilExit()
        }
    }

    public var isRunning: Bool { reap(blocking: false) == nil }

    /// Blocks until the child exits: call it on a thread of its own (`onThread`),
    /// or when the child is known to be going (after a SIGKILL).
    public func waitUntilExit() { _ = reap(blocking: true) }

    /// Waits for the exit on a thread of its own, never one of Swift's few pool threads.
    public func exited() async -> Int32 {
        await onThread { [self] in
            waitUntilExit()
            return terminationStatus
        }
    }

    /// The exit code, or 128 + the signal that killed it (as a shell reports it); -1 while running.
    public var terminationStatus: Int32 {
        guard let status = reaped.withLock({ $0 }) else { return -1 }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// The wait status, reaping the child if it has exited (waiting for that when `blocking`).
    private func reap(blocking: Bool) -> Int32? {
        while true {
            if let status = reaped.withLock({ $0 }) { return status }
            var status: Int32 = 0
            let r = waitpid(processIdentifier, &status, blocking ? 0 : WNOHANG)
            if r == processIdentifier {
                reaped.withLock { $0 = status }
                return status
            }
            if r == 0 { return nil }
            if r < 0 && errno == EINTR { continue }
            // ECHILD: another caller reaped it a moment ago and is storing the status.
            guard blocking else { return reaped.withLock { $0 } }
            usleep(1_000)
        }
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34), which Swift's Glibc module does not
    /// declare; without it, every descriptor open now is closed one by one.
    private static func closeFrom3(_ actions: inout posix_spawn_file_actions_t) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(nil /* RTLD_DEFAULT */, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
            return
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(name), fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for p in pointers { free(p) } }
        return body(&pointers)
    }
}
