import Foundation
import LayerGateClient
import LayerGateServer
import LayerGateStorage
import LayerGateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The descriptor table's plan: every share fits in what the server does not
/// hold itself, at a limit as low as 48 and at the usual ones.
@Suite("Descriptor plan")
struct DescriptorPlanTests {
    @Test(arguments: [48, 64, 256, 1024, 1 << 20])
    func theSharesFitBesideWhatTheServerHolds(limit: Int) {
        for config in Self.configs {
            let plan = DescriptorPlan(limit: limit, held: 8, config: config)
            let shares = plan.openLayerFiles + plan.looseLayerFiles + plan.tenantDescriptors + plan.connections
                + plan.remoteCalls * DescriptorPlan.descriptorsPerRemoteCall
                + (plan.metricsConnections > 0 ? plan.metricsConnections + 1 : 0)
            #expect(8 + plan.own + plan.spare + shares <= limit, "\(limit): \(plan)")
            #expect(!plan.isTooSmall)
            #expect((plan.remoteCalls > 0) == (config.remoteStorage != nil) && (plan.metricsConnections > 0) == (config.metricsListen != nil))
            // Two outside the slots: the table gives half to reads' own, half to evicted files still held.
            #expect(plan.openLayerFiles >= 1 && plan.looseLayerFiles >= 2 && plan.connections >= 1)
            #expect(plan.tenantDescriptors >= DescriptorBudget.perTenant, "\(limit): no room for one tenant")
        }
    }

    @Test func tooLittleLeftBesideWhatTheServerHoldsIsTooSmall() {
        #expect(DescriptorPlan(limit: 40, held: 28, config: ServerConfig()).isTooSmall)
        #expect(DescriptorPlan(limit: 64, held: 48, config: ServerConfig()).isTooSmall)
        #expect(!DescriptorPlan(limit: 48, held: 20, config: ServerConfig()).isTooSmall)
    }

    @Test func aLargeLimitLeavesTheConfigurationAlone() {
        var config = ServerConfig()
        let plan = DescriptorPlan(limit: 1 << 20, held: 8, config: config)
        #expect(!plan.lowers(config))
        plan.apply(to: &config)
        #expect(config.tenant.maxOpenLayerFiles == 256 && config.limits.maxConnections == 1024)
        #expect(config.limits.maxMetricsConnections == 64 && config.tenant.maxRemoteCalls == nil)
    }

    /// The plan's count of the server's own descriptors against an idle
    /// server's real table, for each configuration that changes it.
    @Test(arguments: [[], ["--metrics-listen", "127.0.0.1:0"], ["--event-loop", "nio"], ["--layer-reads", "buffered"]])
    func anIdleServerHoldsNoMoreThanThePlanCounts(args: [String]) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: args + ["--log-level", "debug"],
                                             launcher: ["/usr/bin/prlimit", "--nofile=48:48", "--"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        await c.close()
        try await Task.sleep(for: .milliseconds(200))
        let table = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.process.processIdentifier)/fd")
        let planned = try #require(Self.number("held", in: server.log)).advanced(by: try #require(Self.number("own", in: server.log)))
        let targets = table.map { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.process.processIdentifier)/fd/\($0)")) ?? "?" }
        // The tenant holds its directory, its WAL directory and its WAL segment beyond the plan's own.
        #expect(table.count - DescriptorBudget.perTenant <= planned, "\(args): \(table.count) open, \(planned) planned before the tenant's: \(targets.sorted())")
        print("\(args): an idle server with one tenant holds \(table.count) descriptors; the plan counted \(planned) + the tenant's")
        #expect(await server.stop() == 0)
    }

    /// The flags' own limits are the plan's when they fit: before, the plan
    /// read `--max-open-layer-files` from the defaults and the flag did nothing.
    @Test func theFlagsLimitsAreKeptWhenTheyFit() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--max-open-layer-files", "3", "--max-connections", "7",
                                                                  "--log-level", "debug"])
        #expect(Self.number("max_open_layer_files", in: server.log) == 3, "\(server.log)")
        #expect(Self.number("max_connections", in: server.log) == 7, "\(server.log)")
        #expect(await server.stop() == 0)
    }

    static func number(_ key: String, in log: String) -> Int? {
        guard let line = log.split(separator: "\n").first(where: { $0.contains("descriptor plan") }),
              let field = line.split(separator: " ").first(where: { $0.hasPrefix(key + "=") }) else { return nil }
        return Int(field.dropFirst(key.count + 1))
    }

    static var configs: [ServerConfig] {
        var nio = ServerConfig()
        nio.eventLoop = .nio
        var metrics = ServerConfig()
        metrics.metricsListen = MetricsAddress(parsing: "127.0.0.1:0")
        var buffered = ServerConfig()
        buffered.tenant.directLayerReads = false
        var remote = metrics
        remote.remoteStorage = "file:///nowhere"
        return [ServerConfig(), nio, metrics, buffered, remote]
    }
}
