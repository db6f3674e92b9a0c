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
    /// (both: next to none queued on the pool), and from a plain task (about
    /// one a call: the count sees what it should not let by).
    static func measureThreeWays(calls: Int) async throws -> (ok: Bool, counts: String) {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        _ = try await c.putRecords(tenant: tenantA, [wimage(1, 1)])
        guard install() else { return (false, "swift_task_enqueueGlobal_hook: not found, or taken") }
        let onActor = try await during { try await OnTheLoop(c).read(calls) }
        let preferring = try await during {
            try await Task(executorPreference: c.taskExecutor) { try await readPages(c, calls) }.value
        }
        let plain = try await during { try await Task { try await readPages(c, calls) }.value }
        await c.close()
        _ = await server.stop()
        let counts = "jobs queued on the global pool for \(calls) calls: actor on the loop \(onActor), task preferring the loop \(preferring), plain task \(plain)"
        return (onActor < calls / 10 && preferring < calls / 10 && plain >= calls, counts)
    }
}

/// An actor that drives a connection from the connection's own event loop.
private actor OnTheLoop {
    let client: LayerGateClient
    nonisolated var unownedExecutor: UnownedSerialExecutor { client.executor.asUnownedSerialExecutor() }
    init(_ client: LayerGateClient) { self.client = client }
    func read(_ calls: Int) async throws { try await readPages(client, calls) }
}

nonisolated(nonsending)
private func readPages(_ c: LayerGateClient, _ calls: Int) async throws {
    for _ in 0..<calls {
        let page = try await c.getPage(tenant: tenantA, key: wkey(1)).page
        guard page == wpage(1 << 32 | 1) else { throw ClientError.unexpectedResponse("a page not stored for block 1") }
    }
}
