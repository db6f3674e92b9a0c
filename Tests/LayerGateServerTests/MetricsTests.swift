import Foundation
import LayerGateClient
import LayerGateTestSupport
@testable import LayerGateServer
import LayerGateWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `--metrics-listen`: the real layergated, scraped over TCP after real traffic.
@Suite("Prometheus metrics", .serialized)
struct MetricsTests {
    @Test func aScrapeAfterTrafficShowsWhatHappened() async throws {
        let (dir, server, port) = try await Self.startServer()
        let c = try await server.client()
        // A round trip first: a connect returns once the kernel queued it, maybe before the server took it.
        _ = try await c.listTenants()
        let before = try await Scrape(port: port)
        #expect(before.value("layergate_tenants") == 0)
        #expect(before.value("layergate_connections") == 1)

        try await c.createTenant(tenantA)
        // 300 images of 8 KiB in 30 puts pass the 1 MiB checkpoint distance: flushes happen.
        for batch in 0..<30 {
            _ = try await c.putRecords(tenant: tenantA, (0..<10).map { i in wimage(UInt32(batch * 10 + i), UInt64(batch * 10 + i + 1)) })
        }
        for block in 0..<50 as Range<UInt32> { _ = try await c.getPage(tenant: tenantA, key: wkey(block)) }
        for block in 0..<50 as Range<UInt32> { _ = try await c.getPage(tenant: tenantA, key: wkey(block)) }
        await expectServerError(.tenantNotFound) { try await c.getPage(tenant: String(repeating: "f", count: 32), key: wkey(1)) }
        await expectServerError(.invalidArgument) { try await c.putRecords(tenant: tenantA, [wimage(1, 1)]) }
        let compacted = try await c.compact(tenant: tenantA)
        // Compaction dropped the merged layers' blocks from the cache: read some back in.
        for block in 0..<10 as Range<UInt32> { _ = try await c.getPage(tenant: tenantA, key: wkey(block)) }
        try await Task.sleep(for: MetricsEndpoint.renderInterval * 2)  // not the rendering of the first scrape

        let m = try await Scrape(port: port)
        #expect(m.value("layergate_requests_total", ["type": "get_page", "result": "ok"]) == 110)
        #expect(m.value("layergate_requests_total", ["type": "get_page", "result": "tenant_not_found"]) == 1)
        #expect(m.value("layergate_requests_total", ["type": "put_records", "result": "ok"]) == 30)
        #expect(m.value("layergate_requests_total", ["type": "put_records", "result": "invalid_argument"]) == 1)
        #expect(m.value("layergate_requests_total", ["type": "create_tenant", "result": "ok"]) == 1)
        #expect(m.value("layergate_requests_total", ["type": "compact", "result": "ok"]) == 1)
        #expect(m.value("layergate_request_duration_seconds_count", ["type": "get_page"]) == 111)
        #expect(m.value("layergate_request_duration_seconds_bucket", ["type": "get_page", "le": "+Inf"]) == 111)
        #expect((m.value("layergate_request_duration_seconds_sum", ["type": "put_records"]) ?? 0) > 0)
        #expect(m.value("layergate_ingest_records_total") == 300)
        #expect((m.value("layergate_ingest_bytes_total") ?? 0) > 300 * 8192)
        #expect((m.value("layergate_wal_fsync_seconds_count") ?? 0) >= 1)
        #expect((m.value("layergate_group_commit_puts_count") ?? 0) >= 1)
        #expect(m.value("layergate_group_commit_puts_sum") == 30)
        #expect((m.value("layergate_flushes_total") ?? 0) >= 1)
        #expect(m.value("layergate_flush_duration_seconds_count") == m.value("layergate_flushes_total"))
        #expect((m.value("layergate_compaction_runs_total") ?? 0) >= 1)
        #expect(m.value("layergate_compaction_failures_total") == 0)
        // The Compact's answer counts what its flush wrote too; flushes in the background are not in it.
        let (compactionBytes, flushBytes) = (m.value("layergate_compaction_written_bytes_total") ?? -1,
                                             m.value("layergate_flush_written_bytes_total") ?? -1)
        #expect(flushBytes > 300 * 8192, "every image was flushed")
        #expect(compactionBytes >= 0 && compactionBytes <= Double(compacted.bytesWritten))
        #expect(Double(compacted.bytesWritten) <= compactionBytes + flushBytes)
        #expect((m.value("layergate_page_cache_hits_total") ?? 0) >= 50)
        #expect((m.value("layergate_page_cache_misses_total") ?? 0) >= 1)
        #expect(m.value("layergate_page_cache_capacity_bytes") == Double(16 << 20))
        #expect((m.value("layergate_page_cache_used_bytes") ?? 0) > 0)
        #expect(m.value("layergate_tenants") == 1)
        let status = try await c.tenantStatus(tenantA)
        #expect(m.value("layergate_tenant_last_record_lsn", ["tenant": tenantA]) == 300)
        #expect(m.value("layergate_tenant_disk_consistent_lsn", ["tenant": tenantA]) == Double(status.diskConsistentLsn))
        #expect(m.value("layergate_tenant_layers", ["tenant": tenantA]) == Double(status.layers.count))
        #expect(m.value("layergate_tenant_layer_bytes", ["tenant": tenantA]) == Double(status.layers.reduce(0) { $0 + $1.size }))

        // A counter read from the cache's own totals moves by what happened, not by scrapes.
        let again = try await Scrape(port: port)
        #expect(again.value("layergate_page_cache_hits_total") == m.value("layergate_page_cache_hits_total"))
        #expect(again.value("layergate_requests_total", ["type": "get_page", "result": "ok"]) == 110)
        await c.close()
        #expect(await server.stop() == 0)
        _ = dir
    }

    @Test(.enabled(if: Self.promtool != nil, "promtool is not installed (make test installs the Debian package prometheus)"))
    func promtoolAcceptsTheOutput() async throws {
        let (dir, server, port) = try await Self.startServer()
        let c = try await server.client()
        try await c.createTenant(tenantA)
        _ = try await c.putRecords(tenant: tenantA, [wimage(1, 1), wimage(2, 2)])
        _ = try await c.getPage(tenant: tenantA, key: wkey(1))
        await expectServerError(.pageNotFound) { try await c.getPage(tenant: tenantA, key: wkey(99)) }
        _ = try await c.compact(tenant: tenantA)
        let text = try await Scrape(port: port).text
        let lint = try await runToExit(try #require(Self.promtool), ["check", "metrics"], stdin: text)
        let said = lint.stdout + lint.stderr
        #expect(lint.status == 0, "\(said)")
        #expect(said.isEmpty, "promtool's lint: \(said)")
        await c.close()
        _ = await server.stop()
        _ = dir
    }

    @Test func theEndpointAnswersOnlyMetricsAndSurvivesJunk() async throws {
        let (dir, server, port) = try await Self.startServer()
        #expect(try await Scrape.raw(port: port, "GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 404"))
        let post = try await Scrape.raw(port: port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        #expect(post.hasPrefix("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"))
        let head = try await Scrape.raw(port: port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 200") && !head.contains("# TYPE"))
        // Not HTTP at all, and a header far past what the decoder takes: refused, the server serves on.
        #expect(try await Scrape.raw(port: port, String(repeating: "\u{1}nonsense\r\n", count: 1000)).hasPrefix("HTTP/1.1 400"))
        let huge = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 1 << 20) + "\r\n\r\n"
        #expect(!(try await Scrape.raw(port: port, huge)).hasPrefix("HTTP/1.1 200"))
        // Two scrapes on one kept-alive connection.
        let two = try await Scrape.raw(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(two.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
        #expect(try await Scrape(port: port).value("layergate_tenants") == 0)
        let c = try await server.client()
        #expect(try await c.listTenants().isEmpty)
        await c.close()
        #expect(await server.stop() == 0)
        _ = dir
    }

    /// Peers that would make the endpoint hold memory, or lock scrapers out.
    @Test func hostileScrapersCostBoundedMemoryAndCannotLockOthersOut() async throws {
        let (dir, server, port) = try await Self.startServer()
        let pid = server.process.processIdentifier
        // CONNECT and upgrades: refused at their head, the connection closed (the decoder would buffer what follows).
        let connect = try await Scrape.raw(port: port, "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n" + String(repeating: "z", count: 1 << 20))
        #expect(connect.hasPrefix("HTTP/1.1 400"), "\(connect.prefix(200))")
        let upgrade = try await Scrape.raw(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        #expect(upgrade.hasPrefix("HTTP/1.1 400"), "\(upgrade.prefix(200))")
        // An absolute-form target is the same resource.
        #expect(try await Scrape.raw(port: port, "GET http://127.0.0.1/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 200"))
        // 50,000 pipelined requests from a peer that never reads: answered one at a time, the rest not read.
        let before = try Self.residentBytes(pid)
        let flooder = try RawTCP(port: port)
        let flood = Array(String(repeating: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", count: 50_000).utf8)
        // Three seconds of sending: on a thread of its own, never one of Swift's few pool threads.
        let sent = await onThread { flooder.sendNonBlocking(flood, for: .seconds(3)) }
        let grown = try Self.residentBytes(pid) - before
        #expect(grown < 64 << 20, "RSS grew by \(grown >> 20) MiB while a peer pipelined \(sent) bytes of requests it never read")
        // 64 silent connections fill the endpoint; a scraper still gets in (the silent one idle longest goes).
        let silent = try (0..<ServerLimits().maxMetricsConnections).map { _ in try RawTCP(port: port) }
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await Scrape(port: port).value("layergate_tenants") == 0)
        _ = (silent, flooder)
        // And the page service never noticed.
        let c = try await server.client()
        #expect(try await c.listTenants().isEmpty)
        await c.close()
        #expect(await server.stop() == 0)
        _ = dir
    }

    static func residentBytes(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) << 10
    }

    @Test func aBadOrTakenAddressStopsTheStartWithAReason() async throws {
        let dir = ServerDir()
        let bad = try await runToExit(try builtExecutable("layergated").path,
                                      ["--socket", dir.socket, "--data-dir", dir.data, "--metrics-listen", "localhost"])
        let said = bad.stderr
        #expect(bad.status == 64 && said.contains("--metrics-listen must be HOST:PORT"), "\(said)")

        let holder = try TCPListener()
        do {
            _ = try await ServerProcess(dir: dir, extraArgs: ["--metrics-listen", "127.0.0.1:\(holder.port)"])
            Issue.record("layergated started on a taken metrics port")
        } catch let e as StartFailure {
            #expect(e.log.contains("--metrics-listen 127.0.0.1:\(holder.port)"), "\(e.log)")
        }
        #expect(access(dir.socket, F_OK) != 0, "a server that did not start left its socket file")
    }

    // MARK: helpers

    static let promtool: String? = ["/usr/bin/promtool", "/usr/local/bin/promtool", "/bin/promtool"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    static func startServer() async throws -> (ServerDir, ServerProcess, Int) {
        let dir = ServerDir()
        let port = try TCPListener().port  // free now; taken back by the server at once
        let server = try await ServerProcess(dir: dir, extraArgs: [
            "--metrics-listen", "127.0.0.1:\(port)", "--checkpoint-distance-mib", "1", "--compaction-period-s", "3600",
        ])
        return (dir, server, port)
    }
}

/// One `/metrics` answer, parsed: sample name with labels → value.
struct Scrape {
    let text: String
    private let samples: [String: Double]

    init(port: Int) async throws {
        let answer = try await Self.raw(port: port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        guard answer.hasPrefix("HTTP/1.1 200"), let split = answer.range(of: "\r\n\r\n") else {
            throw ScrapeFailed(answer: String(answer.prefix(500)))
        }
        text = String(answer[split.upperBound...])
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            samples[Self.canonical(String(line[..<space]))] = v
        }
        self.samples = samples
    }

    /// The value of `name` with exactly `labels`, nil when not exported.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let text = labels.isEmpty ? name : name + "{" + labels.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",") + "}"
        return samples[Self.canonical(text)]
    }

    /// Labels sorted, so the exporter's order does not matter.
    private static func canonical(_ series: String) -> String {
        guard let open = series.firstIndex(of: "{"), series.hasSuffix("}") else { return series }
        let labels = series[series.index(after: open)..<series.index(before: series.endIndex)]
            .split(separator: ",").map(String.init).sorted()
        return String(series[..<open]) + "{" + labels.joined(separator: ",") + "}"
    }

    /// Sends `request` to 127.0.0.1:`port` and reads until the server closes
    /// (10 s at most), on a thread of its own (not Swift's pool, as `RawConnection.readFrame`).
    static func raw(port: Int, _ request: String) async throws -> String {
        try await onThread { () throws -> String in try rawNow(port: port, request) }
    }

    private static func rawNow(port: Int, _ request: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ScrapeFailed(answer: "socket: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in.loopback(port: port)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { throw ScrapeFailed(answer: "connect to port \(port): errno \(errno)") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }  // the server may close on a request it refuses before reading it all
            sent += n
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            answer += chunk[..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }
}

struct ScrapeFailed: Error, CustomStringConvertible {
    var answer: String
    var description: String { "no metrics: \(answer)" }
}

/// A TCP connection to 127.0.0.1, closed at deinit.
final class RawTCP: Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in.loopback(port: port)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, ok == 0 else { throw ScrapeFailed(answer: "connect to port \(port): errno \(errno)") }
    }

    deinit { close(fd) }

    /// Sends what the peer takes within `duration`, never blocking; returns the bytes sent.
    func sendNonBlocking(_ bytes: [UInt8], for duration: Duration) -> Int {
        let deadline = ContinuousClock.now + duration
        var sent = 0
        while sent < bytes.count, ContinuousClock.now < deadline {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n > 0 { sent += n } else { usleep(10_000) }
        }
        return sent
    }
}

/// A TCP socket listening on a free loopback port, held until deinit.
final class TCPListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in.loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, len) == 0 && listen(fd, 1) == 0 && getsockname(fd, p, &len) == 0
            }
        }
        guard fd >= 0, bound else {
            if fd >= 0 { close(fd) }
            throw ScrapeFailed(answer: "no free TCP port: errno \(errno)")
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { close(fd) }
}

extension sockaddr_in {
    static func loopback(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = UInt16(port).bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return a
    }
}

/// Every exported metric is named by Prometheus' conventions and explained in docs/METRICS.md.
@Suite("metric names and their documentation")
struct MetricCatalogTests {
    @Test func everyMetricFollowsTheNamingConventionsAndIsDocumented() throws {
        let all = Server.metricDescriptions
        #expect(Set(all.map(\.name)).count == all.count, "a metric name is described twice")
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/METRICS.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        for m in all {
            #expect(m.name.hasPrefix("layergate_"), "\(m.name)")
            #expect(!m.help.isEmpty, "\(m.name) has no help text")
            switch m.kind {
            case .counter: #expect(m.name.hasSuffix("_total"), "\(m.name): a counter ends in _total")
            case .durationHistogram: #expect(m.name.hasSuffix("_seconds"), "\(m.name): a duration is in seconds")
            case .gauge, .valueHistogram: #expect(!m.name.hasSuffix("_total"), "\(m.name): only counters end in _total")
            }
            #expect(text.contains("`\(m.name)`"), "docs/METRICS.md does not explain \(m.name)")
        }
    }
}
