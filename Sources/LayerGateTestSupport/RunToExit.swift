import Foundation

/// What a command run to its end printed, and how it ended.
public struct Finished: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs `executable` with `arguments` until it exits, feeding it `stdin`,
/// all on threads of their own: the wait, and the reads of its two outputs,
/// each of which can fill while the other is read.
/// `environment` nil inherits this process's.
public func runToExit(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                      stdin: String? = nil) async throws -> Finished {
    try await onThread { () throws -> Finished in
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        let errText = ThreadResult { String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let outText = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return Finished(status: p.terminationStatus, stdout: outText, stderr: errText.value())
    }
}

/// A value computed on a thread of its own, waited for by blocking.
private final class ThreadResult<T: Sendable>: @unchecked Sendable {
    // @unchecked: `value` is written once before the semaphore is signalled, read after the wait.
    private var result: T?
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () -> T) {
        Thread { [self] in
            result = body()
            done.signal()
        }.start()
    }

    func value() -> T {
        done.wait()
        guard let result else { preconditionFailure("signalled before the result was set") }
        return result
    }
}
