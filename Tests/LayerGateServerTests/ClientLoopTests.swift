import LayerGateClient
import LayerGateWire
import Testing

/// The async client's own loop (`ClientLoop`) against a real layergated:
/// what an event loop of one's own must get right, beyond single calls.
@Suite("the async client's loop")
struct ClientLoopTests {
    /// Batches far larger than the socket's buffers both ways (the loop waits
    /// for room to write, while it reads answers), from three kinds of caller
    /// at once on one connection, every page byte-exact.
    @Test func largeBatchesFromEveryKindOfCallerAreAllAnswered() async throws {
        let server = try await ServerProcess(dir: ServerDir())
        let c = try await server.client()
        try await c.createTenant(tenantA)
        for block in UInt32(0)..<64 { _ = try await c.putRecords(tenant: tenantA, [wimage(block, UInt64(block) + 1)]) }
        let keys = (0..<6000).map { wkey(UInt32($0 % 64)) }
        let driver = Driver(c)
        async let plain = wrongPages(c, keys)
        async let preferring = Task(executorPreference: c.taskExecutor) { await wrongPages(c, keys) }.value
        async let onActor = driver.wrongPages(keys)
        let wrong = await [plain, preferring, onActor]
        #expect(wrong == [0, 0, 0], "pages missing or wrong: plain task, task preferring the loop, actor on it")
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// A client let go of without `close` closes its connection: the server
    /// sees every one of 40 such clients go.
    @Test func aClientLetGoOfClosesItsConnection() async throws {
        let server = try await ServerProcess(dir: ServerDir())
        let watcher = try await server.client()
        let before = try await watcher.serverStatus().connections
        for _ in 0..<40 {
            let dropped = try await server.client()
            _ = try await dropped.listTenants()
        }
        var open = UInt32.max
        for _ in 0..<200 {
            open = try await watcher.serverStatus().connections
            if open == before { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(open == before, "connections the server still holds, of 40 clients let go: \(open - before)")
        await watcher.close()
        #expect(await server.stop() == 0)
    }

    /// A connect still waiting for room in a full listen backlog when its loop
    /// shuts down is served once it gets in, by the loop's next thread: its
    /// call ends with the timeout, as on any loop. It was registered in
    /// another loop's epoll set, through the number of the stopped loop's
    /// closed descriptor, and its calls waited for ever.
    @Test func aConnectThatOutlivesItsLoopsThreadIsServedByTheNext() async throws {
        let server = try await ServerProcess(dir: ServerDir())  // first: under load it takes seconds to start
        let dir = ServerDir()
        let path = dir.path + "/full.sock"
        let full = try FullBacklog(path: path)
        let loop = ClientLoop()
        let connecting = Task { try await LayerGateClient.connect(socketPath: path, timeout: .seconds(5), loop: loop) }
        try await Task.sleep(for: .milliseconds(200))  // retrying: the backlog is full
        await loop.shutdown()
        let other = ClientLoop()  // takes the stopped loop's descriptor numbers, as any new descriptors may
        let bystander = try await LayerGateClient.connect(socketPath: server.dir.socket, loop: other)
        full.peer.serveOne(answering: nil)  // takes a filler: room for the connect, which nobody accepts
        // Nil: the connect failed.
        let outcome = await within(.seconds(20)) { () -> Result<Wire.Response.Body, ClientError>? in
            guard let c = try? await connecting.value else { return nil }
            let answer = await c.callMany([.listTenants(Wire.ListTenantsRequest())]).first
            await c.close()
            return answer
        }
        if case .failure(.timedOut)?? = outcome {} else { Issue.record("the call on a connect that outlived its loop's thread: \(String(describing: outcome))") }
        #expect(try await bystander.listTenants() == [])
        await bystander.close()
        await other.shutdown()
        await loop.shutdown()
        #expect(await server.stop() == 0)
        withExtendedLifetime(full) {}
    }

    /// An actor whose executor is a loop runs on the loop's thread, one job
    /// at a time: before any connection is made on it, and after the loop
    /// was shut down (a new thread starts). Its jobs ran on Swift's pool
    /// both times, where two of them could run at once (4 lost increments in
    /// 40,000 steps, helper-60).
    @Test func anActorOnALoopRunsOnItsThreadBeforeAndAfterAShutdown() async {
        let loop = ClientLoop()
        let counter = Counter(loop)
        await counter.steps(8, of: 500)
        await loop.shutdown()
        await counter.steps(8, of: 500)
        #expect(await counter.tally == Counter.Tally(steps: 8000, offTheLoop: 0))
        await loop.shutdown()
    }

    /// Calls made on a closed client fail at once, and so does `close` twice.
    @Test func aClosedClientFailsItsCallsAtOnce() async throws {
        let server = try await ServerProcess(dir: ServerDir())
        let c = try await server.client()
        await c.close()
        await c.close()
        let outcome = await c.callMany([.listTenants(Wire.ListTenantsRequest())])
        guard case .failure(.connectionClosed)? = outcome.first else {
            Issue.record("a call on a closed client: \(outcome)")
            return
        }
        #expect(await server.stop() == 0)
    }
}

/// An actor on a loop of its own choosing that counts its steps, and those
/// that ran off the loop's thread.
private actor Counter {
    struct Tally: Equatable { var steps = 0, offTheLoop = 0 }
    let loop: ClientLoop
    private(set) var tally = Tally()
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    init(_ loop: ClientLoop) { self.loop = loop }

    func step() {
        tally.steps += 1
        if !loop.isCurrent { tally.offTheLoop += 1 }
    }

    /// `tasks` tasks at once, each taking `count` steps.
    nonisolated func steps(_ tasks: Int, of count: Int) async {
        await withTaskGroup(of: Void.self) { g in
            for _ in 0..<tasks { g.addTask { for _ in 0..<count { await self.step() } } }
        }
    }
}

/// An actor on the connection's loop.
private actor Driver {
    let client: LayerGateClient
    nonisolated var unownedExecutor: UnownedSerialExecutor { client.executor.asUnownedSerialExecutor() }
    init(_ client: LayerGateClient) { self.client = client }
    func wrongPages(_ keys: [Wire.PageKey]) async -> Int { await LayerGateServerTests.wrongPages(client, keys) }
}

/// How many of `keys`' pages (blocks 0-63, stored once each at LSN block + 1)
/// came back missing or other than stored.
nonisolated(nonsending)
private func wrongPages(_ c: LayerGateClient, _ keys: [Wire.PageKey]) async -> Int {
    let pages = await c.getPages(tenant: tenantA, keys: keys)
    return zip(keys, pages).filter { key, page in
        guard case .success(let p) = page else { return true }
        return p.page != wpage(UInt64(key.block) << 32 | (UInt64(key.block) + 1))
    }.count
}
