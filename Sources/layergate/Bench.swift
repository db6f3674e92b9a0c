import ArgumentParser
import Foundation
import LayerGateClient
import LayerGateStorage
import LayerGateWire
import Synchronization

/// GetPage round trips over preloaded, cached pages, in the shape of
/// `layergate-cbench`: N connections, each sending a batch of D requests and
/// waiting for all D before the next. A request's latency is its batch's round
/// trip. Prints ops/s, p50, p99, p99.9.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure GetPage round trips for cached pages.")
    @OptionGroup var global: GlobalOptions
    @Option(name: .shortAndLong, help: "Connections.") var connections = 1
    @Option(name: .shortAndLong, help: "Requests per batch on each connection.") var depth = 1
    @Option(name: .shortAndLong, help: "Seconds to run.") var time = 5.0
    @Option(help: "Distinct pages (preloaded, then read at random).") var pages = 1000
    @Option(help: "Tenant to use (created and loaded when it does not exist).") var tenant = "be0c0000000000000000000000000002"
    @Option(help: "blocking: a thread per connection with LayerGateConnection; async: a task per connection with LayerGateClient.")
    var client: ClientKind = .blocking

    enum ClientKind: String, ExpressibleByArgument, CaseIterable { case blocking, async }

    @Option(help: "caller: each connection reads its batch's pages into one buffer it keeps (getPages(…, into:)), as layergate-cbench reads into its caller's buffers; per-page: an array for each page (getPages).")
    var pageMemory: PageMemory = .caller

    enum PageMemory: String, ExpressibleByArgument, CaseIterable { case caller, perPage = "per-page" }

    func run() async throws {
        guard connections >= 1, depth >= 1, time > 0, pages >= 1 else { throw ValidationError("counts must be positive") }
        let setup = try await global.connect()
        if try await !setup.listTenants().contains(tenant) {
            try await setup.createTenant(tenant)
            for start in stride(from: 0, to: pages, by: 64) {
                let records = (start..<min(start + 64, pages)).map { i in
                    Wire.Record(key: Self.key(i), lsn: UInt64(i + 1), value: .image([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 8192)))
                }
                try await setup.putRecords(tenant: tenant, records)
            }
        }
        let lsn = try await setup.tenantStatus(tenant).lastRecordLsn
        for i in 0..<pages { _ = try await setup.getPage(tenant: tenant, key: Self.key(i), lsn: lsn) }  // warm the cache
        await setup.close()

        let deadline = ContinuousClock.now + .milliseconds(Int(time * 1000))
        let start = ContinuousClock.now
        let load = Load(tenant: tenant, pages: pages, depth: depth, lsn: lsn, deadline: deadline, pageMemory: pageMemory)
        let samples: [Duration]
        switch client {
        case .blocking:
            let socket = global.socket, token = global.effectiveToken, timeout = global.effectiveTimeout
            samples = try await Self.onThreads(connections) { ci in
                try load.run(connection: ci, via: LayerGateConnection(socketPath: socket, token: token, timeout: timeout))
            }
        case .async:
            let clients = try await (0..<connections).asyncMap { _ in try await global.connect() }
            samples = try await withThrowingTaskGroup(of: [Duration].self) { group in
                for (ci, c) in clients.enumerated() {
                    // The way an embedder should drive a connection: each call then resumes on the
                    // connection's own thread, where its answer came in (`LayerGateClient.taskExecutor`).
                    group.addTask(executorPreference: c.taskExecutor) { try await load.run(connection: ci, via: c) }
                }
                var all: [Duration] = []
                for try await part in group { all += part }
                return all
            }
            for c in clients { await c.close() }
        }
        let elapsed = ContinuousClock.now - start
        let sorted = LatencySamples(samples)
        guard sorted.count > 0 else { throw ValidationError("no request finished in \(time) s") }
        let p = sorted.microseconds
        let ops = Double(sorted.count) / elapsed.seconds
        if global.json {
            global.printJSON(["client": client.rawValue, "page_memory": pageMemory.rawValue, "connections": connections, "depth": depth, "requests": sorted.count,
                              "ops_per_sec": ops, "p50_us": p(0.5), "p99_us": p(0.99), "p999_us": p(0.999)])
        } else {
            print(String(format: "GET_PAGE: %.2f requests per second, p50=%.3f msec, p99=%.3f msec, p99.9=%.3f msec (%d connections, depth %d, %d requests, 8 KiB pages, %@ client, %@ page memory)",
                         ops, p(0.5) / 1000, p(0.99) / 1000, p(0.999) / 1000, connections, depth, sorted.count, client.rawValue, pageMemory.rawValue))
        }
    }

    /// One connection's batches until the deadline: each request's latency, every page checked.
    struct Load: Sendable {
        var tenant: String, pages: Int, depth: Int, lsn: UInt64, deadline: ContinuousClock.Instant, pageMemory: PageMemory

        func run(connection ci: Int, via c: LayerGateConnection) throws -> [Duration] {
            var s = Samples(self, connection: ci)
            var memory: [UInt8] = []
            while let keys = s.nextBatch() {
                switch pageMemory {
                case .caller: try s.finish(c.getPages(tenant: tenant, keys: keys, lsn: lsn, into: &memory), in: memory)
                case .perPage: try s.finish(c.getPages(tenant: tenant, keys: keys, lsn: lsn))
                }
            }
            return s.latencies
        }

        nonisolated(nonsending)
        func run(connection ci: Int, via c: LayerGateClient) async throws -> [Duration] {
            var s = Samples(self, connection: ci)
            var memory: [UInt8] = []
            while let keys = s.nextBatch() {
                switch pageMemory {
                case .caller: try s.finish(await c.getPages(tenant: tenant, keys: keys, lsn: lsn, into: &memory), in: memory)
                case .perPage: try s.finish(await c.getPages(tenant: tenant, keys: keys, lsn: lsn))
                }
            }
            return s.latencies
        }

        /// One connection's batches: the keys of the next, and each answered one's latency, its pages checked.
        struct Samples {
            let load: Load
            var latencies: [Duration] = []
            private var x: Int
            private var keys: [Wire.PageKey] = []
            private var started = ContinuousClock.now

            init(_ load: Load, connection ci: Int) {
                self.load = load
                x = ci * 7919 + 1
                latencies.reserveCapacity(100_000)
            }

            /// Nil once the deadline has passed.
            mutating func nextBatch() -> [Wire.PageKey]? {
                guard ContinuousClock.now < load.deadline else { return nil }
                keys = load.nextKeys(&x)
                started = ContinuousClock.now
                return keys
            }

            mutating func finish(_ answers: [Result<Wire.GetPageResponse, ClientError>]) throws {
                let took = ContinuousClock.now - started
                for (answer, key) in zip(answers, keys) { try Load.check(answer.get().page[...], key) }
                for _ in keys { latencies.append(took) }
            }

            mutating func finish(_ answers: [Result<UInt64, ClientError>], in memory: [UInt8]) throws {
                let took = ContinuousClock.now - started
                for (i, (answer, key)) in zip(answers, keys).enumerated() {
                    _ = try answer.get()
                    try Load.check(memory[(i * Wire.pageBytes)..<((i + 1) * Wire.pageBytes)], key)
                }
                for _ in keys { latencies.append(took) }
            }
        }

        fileprivate func nextKeys(_ x: inout Int) -> [Wire.PageKey] {
            (0..<depth).map { _ in
                x = (x &* 1_103_515_245 &+ 12345) & 0x7fff_ffff
                return Bench.key(x % pages)
            }
        }

        /// Each page must be the one preloaded for its block (every byte = the block number).
        fileprivate static func check(_ page: ArraySlice<UInt8>, _ key: Wire.PageKey) throws {
            guard page.count == Wire.pageBytes, page.first == UInt8(truncatingIfNeeded: key.block), page.last == page.first else {
                throw CLIError("block \(key.block): a page that was not stored for it")
            }
        }
    }

    /// Runs `body` on `count` threads of their own and gathers what they return.
    static func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) throws -> [Duration]) async throws -> [Duration] {
        let results = Mutex<[Result<[Duration], any Error>]>([])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let left = Mutex(count)
            for i in 0..<count {
                Thread {
                    let r = Result { try body(i) }
                    results.withLock { $0.append(r) }
                    if left.withLock({ $0 -= 1; return $0 }) == 0 { done.resume() }
                }.start()
            }
        }
        return try results.withLock { rs in try rs.flatMap { try $0.get() } }
    }

    static func key(_ i: Int) -> Wire.PageKey { Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 2000, fork: 0, block: UInt32(i)) }
}

extension Sequence {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await f(e)) }
        return out
    }
}
