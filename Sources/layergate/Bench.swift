import ArgumentParser
import Foundation
import LayerGateClient
import LayerGateWire
import Synchronization

/// GetPage round trips over preloaded, cached pages: N connections, each
/// with D requests in flight, for T seconds. Prints ops/s, p50, p99, p99.9.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure GetPage round trips for cached pages.")
    @OptionGroup var global: GlobalOptions
    @Option(name: .shortAndLong, help: "Connections.") var connections = 1
    @Option(name: .shortAndLong, help: "Requests in flight per connection.") var depth = 1
    @Option(name: .shortAndLong, help: "Seconds to run.") var time = 5.0
    @Option(help: "Distinct pages (preloaded, then read at random).") var pages = 1000
    @Option(help: "Tenant to use (created and loaded when it does not exist).") var tenant = "be0c0000000000000000000000000002"

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

        let clients = try await (0..<connections).asyncMap { _ in try await global.connect() }
        let deadline = ContinuousClock.now + .milliseconds(Int(time * 1000))
        let start = ContinuousClock.now
        let tenant = self.tenant, pages = self.pages
        let samples = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for (ci, c) in clients.enumerated() {
                for d in 0..<depth {
                    group.addTask {
                        var out: [Duration] = []
                        out.reserveCapacity(100_000)
                        var x = ci * 7919 + d * 104_729 + 1
                        let clock = ContinuousClock()
                        while clock.now < deadline {
                            x = (x &* 1_103_515_245 &+ 12345) & 0x7fff_ffff
                            let t0 = clock.now
                            _ = try await c.getPage(tenant: tenant, key: Self.key(x % pages), lsn: lsn)
                            out.append(clock.now - t0)
                        }
                        return out
                    }
                }
            }
            var all: [Duration] = []
            for try await part in group { all += part }
            return all
        }
        let elapsed = ContinuousClock.now - start
        for c in clients { await c.close() }
        let sorted = samples.sorted()
        func p(_ q: Double) -> Double {
            let d = sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
            return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
        }
        let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let ops = Double(sorted.count) / secs
        if global.json {
            global.printJSON(["connections": connections, "depth": depth, "requests": sorted.count, "ops_per_sec": ops,
                              "p50_us": p(0.5), "p99_us": p(0.99), "p999_us": p(0.999)])
        } else {
            print(String(format: "GET_PAGE: %.2f requests per second, p50=%.3f msec, p99=%.3f msec, p99.9=%.3f msec (%d connections, depth %d, %d requests, 8 KiB pages)",
                         ops, p(0.5) / 1000, p(0.99) / 1000, p(0.999) / 1000, connections, depth, sorted.count))
        }
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
