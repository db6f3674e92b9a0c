import Foundation
import LayerGateClient
import LayerGateWire
import Synchronization
import Testing

/// The async client's calls resume on the connection's own thread, where the
/// answer came in, when the caller drives it from there (an actor on
/// `executor`, or a task preferring `taskExecutor`). Before, every answer woke
/// a thread of Swift's global pool first, even for an actor on the loop:
/// `layergate bench --client async` did 15-30 % fewer calls a second.
/// Other callers never run on the loop.
@Suite("the async client's executors")
struct AsyncClientExecutorTests {
    @Test func callsResumeWhereTheirAnswersCameIn() async {
        // Its own process: the count is of every job the runtime queues on its pool.
        let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let (ok, counts) = try await GlobalEnqueues.measureThreeWays(calls: 200)
            FileHandle.standardError.write(Data("\(ok ? "as expected" : "not as expected"): \(counts)".utf8))
        }
        let said = result.map { String(decoding: $0.standardErrorContent, as: UTF8.self) } ?? ""
        #expect(said.hasPrefix("as expected"), "\(said)")
    }

    /// An actor of the caller's own (a default actor, on Swift's pool) goes on
    /// running where it ran: its code after a call never runs on the
    /// connection's event loop, where it would hold up every connection of
    /// that loop (and a wait for another call, a deadlock).
    @Test func aCallersOwnActorDoesNotRunOnTheLoop() async throws {
        let (server, c) = try await serverHoldingBlockOne()
        #expect(try await OwnActor(c).callsFollowedOnALoop(100) == 0)
        #expect(try await Task { @MainActor in try await callsFollowedOnALoop(c, 50) }.value == 0)
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Calls still waiting when their connection's loop shuts down fail,
    /// whichever way they were driven: none waits for ever for a loop that is
    /// gone (their answers would now resume on it), and the process lives.
    @Test func callsWaitingWhenTheirLoopShutsDownFail() async throws {
        let (server, setup) = try await serverHoldingBlockOne()
        await setup.close()
        let loop = ClientLoop()
        let c = try await LayerGateClient.connect(socketPath: server.dir.socket, loop: loop)
        try await readPages(c, 1)
        // Nothing is answered from here. kill returns before the server has stopped: wait for it.
        server.process.signal(SIGSTOP)
        #expect(try await stopped(server.process.processIdentifier))
        defer { server.process.signal(SIGCONT) }
        let onLoop = OnTheLoop(c)
        let waiting: [Task<Bool, Never>] = (0..<30).map { i in
            switch i % 3 {
            case 0: return Task { await onLoop.failsToRead() }
            case 1: return Task(executorPreference: c.taskExecutor) { await failsToRead(c) }
            default: return Task { await failsToRead(c) }
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        await loop.shutdown()
        let outcomes = await within(.seconds(20)) { var all: [Bool] = []; for t in waiting { all.append(await t.value) }; return all }
        #expect(outcomes == Array(repeating: true, count: 30), "every waiting call fails, within 20 s: \(String(describing: outcomes))")
        // A call made after: its loop is gone, and it fails at once.
        let late = await within(.seconds(5)) { await failsToRead(c) }
        #expect(late == true, "a call on a client whose loop is shut down fails within 5 s")
        server.process.signal(SIGCONT)
        await loop.shutdown()  // the tasks' work after the first shutdown may have started its next thread
        #expect(await server.stop() == 0)
    }
}

/// Counts the jobs Swift's concurrency runtime queues on its global pool,
/// through its `swift_task_enqueueGlobal_hook` (the one SwiftNIO takes to run
/// the pool on its loops): each is a pool thread's turn, often a wake-up.
enum GlobalEnqueues {
    private typealias Hook = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void
    private static let count = Atomic<Int>(0)

    /// Installs the counting hook; false when the runtime has no such hook or another holds it.
    private static func install() -> Bool {
        guard let slot = dlsym(dlopen(nil, RTLD_NOW), "swift_task_enqueueGlobal_hook") else { return false }
        let hooked = slot.assumingMemoryBound(to: UnsafeRawPointer?.self)
        guard hooked.pointee == nil else { return false }
        let hook: Hook = { job, original in
            GlobalEnqueues.count.add(1, ordering: .relaxed)
            original(job)
        }
        hooked.pointee = unsafeBitCast(hook, to: UnsafeRawPointer.self)
        return true
    }

    private static func during(_ body: () async throws -> Void) async rethrows -> Int {
        let before = count.load(ordering: .relaxed)
        try await body()
        return count.load(ordering: .relaxed) - before
    }

    /// `calls` GetPages each way against a real layergated: from an actor on
    /// the connection's executor, from a task preferring its task executor
    /// (both: next to none queued on the pool), and from a plain task (up to
    /// one a call, less each answer in before its task had suspended, which
    /// then goes on without being queued: 85-202 of 200 seen; the count sees
    /// what it should not let by).
    static func measureThreeWays(calls: Int) async throws -> (ok: Bool, counts: String) {
        let (server, c) = try await serverHoldingBlockOne()
        guard install() else { return (false, "swift_task_enqueueGlobal_hook: not found, or taken") }
        let onActor = try await during { try await OnTheLoop(c).read(calls) }
        let preferring = try await during {
            try await Task(executorPreference: c.taskExecutor) { try await readPages(c, calls) }.value
        }
        let plain = try await during { try await Task { try await readPages(c, calls) }.value }
        await c.close()
        _ = await server.stop()
        let counts = "jobs queued on the global pool for \(calls) calls: actor on the loop \(onActor), task preferring the loop \(preferring), plain task \(plain)"
        return (onActor < calls / 10 && preferring < calls / 10 && plain >= calls / 5, counts)
    }
}

/// An actor that drives a connection from the connection's own event loop.
private actor OnTheLoop {
    let client: LayerGateClient
    nonisolated var unownedExecutor: UnownedSerialExecutor { client.executor.asUnownedSerialExecutor() }
    init(_ client: LayerGateClient) { self.client = client }
    func read(_ calls: Int) async throws { try await readPages(client, calls) }
    func failsToRead() async -> Bool { await LayerGateServerTests.failsToRead(client) }
}

/// A real layergated whose tenant A holds block 1 (`readPages` reads it), and a client of it.
private func serverHoldingBlockOne() async throws -> (ServerProcess, LayerGateClient) {
    let server = try await ServerProcess(dir: ServerDir())
    let c = try await server.client()
    try await c.createTenant(tenantA)
    _ = try await c.putRecords(tenant: tenantA, [wimage(1, 1)])
    return (server, c)
}

/// A default actor: it runs on Swift's pool, or on its caller's preferred executor.
private actor OwnActor {
    let client: LayerGateClient
    init(_ client: LayerGateClient) { self.client = client }
    func callsFollowedOnALoop(_ calls: Int) async throws -> Int {
        try await LayerGateServerTests.callsFollowedOnALoop(client, calls)
    }
}

/// Of `calls` GetPages, how many were followed by the caller's code on the
/// client's loop thread (it runs where its caller is isolated).
nonisolated(nonsending)
private func callsFollowedOnALoop(_ c: LayerGateClient, _ calls: Int) async throws -> Int {
    var onLoop = 0
    for _ in 0..<calls {
        try await readPages(c, 1)
        if ClientLoop.shared.isCurrent { onLoop += 1 }
    }
    return onLoop
}

/// What `body` returns, or nil when it takes longer than `limit`. The wait
/// ends then even if `body` does not: a hang under test fails its test
/// instead of stalling the run (a task group would wait for `body` to end).
func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
    let waiter = FirstAnswer<T?>()
    return await withCheckedContinuation { continuation in
        waiter.set(continuation)
        Task { waiter.resume(await body()) }
        Task {
            try? await Task.sleep(for: limit)
            waiter.resume(nil)
        }
    }
}

/// A continuation resumed by whichever comes first.
final class FirstAnswer<T: Sendable>: Sendable {
    private let waiting = Mutex<CheckedContinuation<T, Never>?>(nil)
    func set(_ c: CheckedContinuation<T, Never>) { waiting.withLock { $0 = c } }
    func resume(_ value: T) { waiting.withLock { $0.take() }?.resume(returning: value) }
}

/// True once process `pid` is stopped (its state in /proc is T), within 5 s.
private func stopped(_ pid: Int32) async throws -> Bool {
    for _ in 0..<500 {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        // The state follows the command's closing parenthesis.
        if let close = stat.lastIndex(of: ")"), stat[close...].dropFirst().trimmingCharacters(in: .whitespaces).hasPrefix("T") { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return false
}

/// True when a GetPage fails, false when it is answered.
nonisolated(nonsending)
private func failsToRead(_ c: LayerGateClient) async -> Bool {
    do { try await readPages(c, 1); return false } catch { return true }
}

nonisolated(nonsending)
private func readPages(_ c: LayerGateClient, _ calls: Int) async throws {
    for _ in 0..<calls {
        let page = try await c.getPage(tenant: tenantA, key: wkey(1)).page
        guard page == wpage(1 << 32 | 1) else { throw ClientError.unexpectedResponse("a page not stored for block 1") }
    }
}
