import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Testing

/// A binary built next to this test bundle.
func builtExecutable(_ name: String) throws -> URL {
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [dir, dir.deletingLastPathComponent()] {
        let url = candidate.appendingPathComponent(name)
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    throw MissingBinary(name: name)
}

struct MissingBinary: Error, CustomStringConvertible {
    var name: String
    var description: String { "\(name) is not built: run `swift build` first" }
}

/// A temp directory for one server: socket, data dir, logs. Removed at the end.
/// Readable by all: tests run clients as another uid.
final class ServerDir: Sendable {
    private let scratch = TemporaryDirectory("srv", mode: 0o755)
    var path: String { scratch.path }
    var socket: String { path + "/s.sock" }
    var data: String { path + "/data" }
}

/// The real layergated as a subprocess.
final class ServerProcess: Sendable {
    let dir: ServerDir
    let process: ChildProcess
    let stderrFile: String

    /// Starts layergated (through `launcher`, like `prlimit … --`, when given)
    /// and waits until its socket answers.
    init(dir: ServerDir, extraArgs: [String] = [], environment: [String: String] = [:], launcher: [String] = [],
         dataDir: String? = nil) async throws {
        self.dir = dir
        stderrFile = dir.path + "/server-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: stderrFile, contents: nil)
        // `make test` points this at the release build for the tests that measure the server.
        let server = try ProcessInfo.processInfo.environment["LAYERGATE_SERVER_BIN"].map { URL(fileURLWithPath: $0) }
            ?? builtExecutable("layergated")
        let args = ["--socket", dir.socket, "--data-dir", dataDir ?? dir.data, "--page-cache-mib", "16",
                    "--log-level", "warning"] + extraArgs
            // LAYERGATE_SERVER_ARGS="--event-loop nio" runs these tests against the other event loop.
            + (ProcessInfo.processInfo.environment["LAYERGATE_SERVER_ARGS"]?.split(separator: " ").map(String.init) ?? [])
        let command = launcher.isEmpty ? [server.path] + args : launcher + [server.path] + args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        // Started as a shell starts it (no signal blocked), so its SIGTERM is met as in production.
        process = try ChildProcess(executable: command[0], arguments: Array(command.dropFirst()), environment: env,
                                   stderr: .file(stderrFile))
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if !process.isRunning { throw StartFailure(log: log) }
            if let c = try? await LayerGateClient.connect(socketPath: dir.socket) {
                await c.close()
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.signal(SIGKILL)
        throw StartFailure(log: log)
    }

    var log: String { (try? String(contentsOfFile: stderrFile, encoding: .utf8)) ?? "" }

    func client() async throws -> LayerGateClient { try await LayerGateClient.connect(socketPath: dir.socket) }

    /// Sends a signal and waits for the exit status.
    func stop(_ signal: Int32 = SIGTERM) async -> Int32 {
        process.signal(signal)
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        process.signal(SIGKILL)
        return await process.exited()
    }
}

struct StartFailure: Error, CustomStringConvertible {
    var log: String
    var description: String { "layergated did not start:\n\(log)" }
}

let tenantA = "0123456789abcdef0123456789abcdef"

func wkey(_ block: UInt32) -> Wire.PageKey { Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: block) }

func wpage(_ seed: UInt64) -> [UInt8] { seededPage(seed) }

func wimage(_ block: UInt32, _ lsn: UInt64) -> Wire.Record {
    Wire.Record(key: wkey(block), lsn: lsn, value: .image(wpage(UInt64(block) << 32 | lsn)))
}

/// Expects a call to fail with the server error `code`.
func expectServerError<T>(_ code: Wire.ErrorCode, _ body: () async throws -> T, sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        _ = try await body()
        Issue.record("expected \(code.name)", sourceLocation: sourceLocation)
    } catch let ClientError.server(got, message) {
        #expect(got == code, "\(message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code.name), got \(error)", sourceLocation: sourceLocation)
    }
}

/// A raw socket for sending bytes no well-behaved client would.
final class RawConnection {
    let fd: Int32
    init(_ path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { dst in for (i, b) in path.utf8.enumerated() { dst[i] = b } }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else { throw MissingBinary(name: "socket \(path)") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
    deinit { close(fd) }

    /// `MSG_NOSIGNAL` on every write here: a server that closed the connection
    /// must fail the write, not kill the tests with SIGPIPE.
    func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    /// Sends all of `bytes` from a thread of its own, which blocks while the
    /// server holds the connection back (and stops if it closes), so the test
    /// can read the answers meanwhile, or never.
    func sendAllInBackground(_ bytes: [UInt8]) {
        let fd = self.fd
        Thread {
            bytes.withUnsafeBytes { b in
                var at = 0
                while at < b.count {
                    let n = Glibc.send(fd, b.baseAddress! + at, b.count - at, Int32(MSG_NOSIGNAL))
                    if n <= 0 { return }
                    at += n
                }
            }
        }.start()
    }

    /// Writes without blocking; returns how many bytes went out (0 when the socket is full).
    func sendNonBlocking(_ bytes: [UInt8]) -> Int {
        let r = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        return max(0, r)
    }

    /// Reads one frame, or nil at end of stream (or after 10 s without a
    /// byte), on a thread of its own: a test awaiting a slow or hung server
    /// must not hold one of the two threads of Swift's pool meanwhile.
    func readFrame() async -> [UInt8]? {
        let fd = self.fd
        return await onThread { Self.readFrame(fd) }
    }

    /// The same, blocking the calling thread: for threads of a test's own.
    func readFrameNow() -> [UInt8]? { Self.readFrame(fd) }

    /// True when the server has closed the connection (read off the pool, as `readFrame`).
    func isClosed() async -> Bool {
        let fd = self.fd
        return await onThread { Self.readExactly(fd, 1) == nil }
    }

    /// Whether the server has closed the connection, without waiting (what it sent is discarded).
    func isClosedNow() -> Bool {
        var sink = [UInt8](repeating: 0, count: 4096)
        while true {
            let r = sink.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if r > 0 { continue }
            return r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }

    private static func readFrame(_ fd: Int32) -> [UInt8]? {
        guard let header = readExactly(fd, 4) else { return nil }
        let n = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        return readExactly(fd, n)
    }

    private static func readExactly(_ fd: Int32, _ n: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
            if r <= 0 { return nil }
            got += r
        }
        return out
    }
}
