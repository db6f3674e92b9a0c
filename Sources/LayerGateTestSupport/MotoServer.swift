import Foundation
import LayerGateStorage

/// A local S3 endpoint for tests: `moto_server` (PyPI `moto[server]`) on a
/// loopback port, stopped by `stop()` or when the value goes away. `make test`
/// installs moto when it is missing.
public final class MotoServer: Sendable {
    public let endpoint: String
    private let process: ChildProcess

    private init(endpoint: String, process: ChildProcess) {
        self.endpoint = endpoint
        self.process = process
    }

    deinit { stop() }

    /// Kills it: moto keeps nothing worth a graceful end, and a SIGKILL ends
    /// it at once, so a test's `defer { moto.stop() }` holds no thread of
    /// Swift's pool for long. Idempotent.
    public func stop() {
        if process.signal(SIGKILL) { process.waitUntilExit() }
    }

    /// Where moto_server is: on PATH, or in pyenv's shims.
    public static func executable() -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
        for dir in path + [home + "/.pyenv/shims", home + "/.local/bin", "/usr/local/bin"] {
            let candidate = dir + "/moto_server"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Starts one and waits until it answers; nil (after saying why `test` skips) when there is no moto.
    /// The wait is on a thread of its own: moto takes seconds to come up, and
    /// a test that waited on Swift's concurrency pool held up every other
    /// test's tasks meanwhile (a close timed by another test took 3 s).
    public static func start(test: String) async throws -> MotoServer? {
        try await onThread { try startWaiting(test: test) }
    }

    private static func startWaiting(test: String) throws -> MotoServer? {
        guard let moto = executable() else {
            print("skipped \(test): moto_server is not installed (pip install 'moto[server]', which make test does)")
            return nil
        }
        for _ in 0..<5 {
            let port = Int.random(in: 20000..<60000)
            // exec: the process is moto itself, not pyenv's shim around it, so a signal reaches it.
            let process = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "exec \"$0\" -H 127.0.0.1 -p \(port)", moto])
            let server = MotoServer(endpoint: "http://127.0.0.1:\(port)", process: process)
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline && process.isRunning {
                if answers(port: port) { return server }
                usleep(100_000)
            }
            server.stop()  // the port was taken, or it did not come up: another port
        }
        throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "moto_server did not start"])
    }

    /// An S3 store on `bucket` of this endpoint (created if missing), with moto's test credentials.
    public func store(bucket: String, prefix: String = "lg") throws -> S3RemoteStore {
        let store = try S3RemoteStore(bucket: bucket, prefix: prefix, endpoint: endpoint, region: "us-east-1",
                                      credentials: .init(accessKeyId: "testing", secretAccessKey: "testing"))
        try store.createBucket()
        return store
    }

    private static func answers(port: Int) -> Bool {
        let probe = try? S3RemoteStore(bucket: "ready", prefix: "", endpoint: "http://127.0.0.1:\(port)", region: "us-east-1",
                                       credentials: .init(accessKeyId: "testing", secretAccessKey: "testing"))
        return (try? probe?.createBucket()) != nil
    }
}
