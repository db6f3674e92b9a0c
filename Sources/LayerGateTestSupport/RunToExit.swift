import Foundation

/// What a command run to its end printed, and how it ended.
public struct Finished: Sendable {
    /// The exit code, or 128 + the signal that killed it, as a shell (and `ChildProcess`) reports it.
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// A command that had not exited by its deadline; it was killed.
public struct DidNotExit: Error, CustomStringConvertible {
    public let command: [String]
    public let after: Duration
    public let stderr: String
    public var description: String { "\(command.joined(separator: " ")) had not exited after \(after): killed. stderr: \(stderr)" }
}

/// Runs `executable` with `arguments` until it exits, all on threads of its
/// own: the wait, and the reads of its two outputs, each of which can fill
/// while the other is read. `stdin` is read from a file, so a command that
/// exits without reading it costs no broken pipe. One that runs past
/// `deadline` (a server that was to refuse to start, and served) is killed,
/// and the run throws: a test fails rather than hangs.
public func runToExit(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                      stdin: String? = nil, deadline: Duration = .seconds(60)) async throws -> Finished {
    try await onThread { () throws -> Finished in
        let input = TemporaryDirectory("stdin")
        let inputPath = input.path + "/stdin"
        try Data((stdin ?? "").utf8).write(to: URL(fileURLWithPath: inputPath))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle(forReadingAtPath: inputPath)
        try p.run()
        let pid = p.processIdentifier
        let exited = DispatchSemaphore(value: 0)
        let killed = ThreadResult { () -> Bool in
            guard exited.wait(timeout: .now() + .nanoseconds(Int(deadline / .nanoseconds(1)))) == .timedOut else { return false }
            kill(pid, SIGKILL)
            return true
        }
        let errText = ThreadResult { String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
        let outText = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        exited.signal()
        guard !killed.value() else { throw DidNotExit(command: [executable] + arguments, after: deadline, stderr: errText.value()) }
        let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
        return Finished(status: status, stdout: outText, stderr: errText.value())
    }
}

/// Runs a short system tool (mount, umount) to its end on the calling thread,
/// its output discarded; its exit status, or -1 when it could not start. For
/// calls that cannot await (a deinit); `runToExit` for the rest.
func runQuietly(_ tool: String, _ arguments: [String]) -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = arguments
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return -1 }
    p.waitUntilExit()
    return p.terminationStatus
}

/// A value computed on a thread of its own, waited for by blocking.
private final class ThreadResult<T: Sendable>: @unchecked Sendable {
    // @unchecked: `result` is written once before the semaphore is signalled, read after the wait.
    private var result: T?
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () -> T) {
        Thread { [self] in
            result = body()
            done.signal()
        }.start()
    }

    /// Waits for the value; may be called more than once.
    func value() -> T {
        done.wait()
        done.signal()
        guard let result else { preconditionFailure("signalled before the result was set") }
        return result
    }
}
