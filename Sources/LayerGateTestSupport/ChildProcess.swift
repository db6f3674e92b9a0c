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
    /// Set once, by whichever caller reaps the child, under the lock: so no
    /// signal is sent after the pid is free for another process to take.
    private let reaped = Mutex<Reaped?>(nil)

    private enum Reaped {
        case status(Int32)
        /// Reaped by someone else (ECHILD): gone, how is not known.
        case unknown
    }

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
        if signal(SIGKILL) { waitUntilExit() }
    }

    /// Sends `signal` unless the child is reaped (its pid may be another's by then); true if sent.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        reaped.withLock { reaped in
            guard reaped == nil else { return false }
            return kill(processIdentifier, signal) == 0
        }
    }

    public var isRunning: Bool { reapIfExited() == nil }

    /// Blocks until the child exits: call it on a thread of its own (`exited()`),
    /// or when the child is known to be going (after a SIGKILL).
    public func waitUntilExit() {
        while reapIfExited() == nil {
            // Waits without reaping, outside the lock; the reap itself is `reapIfExited`'s alone.
            var info = siginfo_t()
            if waitid(P_PID, id_t(processIdentifier), &info, WEXITED | WNOWAIT) != 0 && errno != EINTR && errno != ECHILD {
                preconditionFailure("waitid for child \(processIdentifier): errno \(errno)")
            }
        }
    }

    /// Waits for the exit on a thread of its own, never one of Swift's few pool threads.
    public func exited() async -> Int32 {
        await onThread { [self] in
            waitUntilExit()
            return terminationStatus
        }
    }

    /// The exit code, or 128 + the signal that killed it (as a shell reports it);
    /// -1 while running, or when something else reaped it.
    public var terminationStatus: Int32 {
        switch reaped.withLock({ $0 }) {
        case .status(let status)?:
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : 128 + signal
        case .unknown?, nil: return -1
        }
    }

    /// Reaps the child if it has exited, without waiting; nil while it runs.
    private func reapIfExited() -> Reaped? {
        reaped.withLock { reaped in
            if let reaped { return reaped }
            var status: Int32 = 0
            var r: pid_t
            repeat { r = waitpid(processIdentifier, &status, WNOHANG) } while r < 0 && errno == EINTR
            if r == processIdentifier {
                reaped = .status(status)
            } else if r < 0 {
                reaped = .unknown
            }
            return reaped
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
