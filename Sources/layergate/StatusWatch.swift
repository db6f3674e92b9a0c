import Foundation
import LayerGateClient
import LayerGateStorage
import LayerGateWire

/// `layergate status [TENANT] --watch`: the server (and one tenant) refreshed
/// every interval, with rates since the refresh before. On a terminal it
/// redraws the screen; into a pipe it writes one line per refresh (`--json`:
/// one object per line). A server that stops answering is shown as such and
/// reconnected at the next refresh, so a restart can be watched too.
struct StatusWatch {
    let global: GlobalOptions
    let tenant: String?
    let interval: Duration
    /// Refreshes before stopping; nil: until interrupted.
    let count: Int?

    struct Sample {
        var at: ContinuousClock.Instant
        var server: Wire.ServerStatusResponse
        var tenant: Wire.TenantStatusResponse?
    }

    func run() async throws {
        let terminal = isatty(STDOUT_FILENO) != 0 && !global.json
        var client: LayerGateClient?
        var previous: Sample?
        var shown = 0
        while count.map({ shown < $0 }) ?? true {
            if shown > 0 { try await Task.sleep(for: interval) }
            shown += 1
            do {
                if client == nil { client = try await global.connect() }
                guard let c = client else { continue }
                let server = try await c.serverStatus()
                var t: Wire.TenantStatusResponse?
                if let tenant { t = try await c.tenantStatus(tenant) }
                let now = Sample(at: .now, server: server, tenant: t)
                show(now, since: previous, terminal: terminal)
                previous = now
            } catch {
                await client?.close()
                client = nil
                previous = nil
                showUnreachable(error, terminal: terminal)
            }
        }
        await client?.close()
    }

    private func show(_ s: Sample, since p: Sample?, terminal: Bool) {
        let secs = p.map { ($0.at.duration(to: s.at)).seconds } ?? 0
        func rate(_ now: UInt64, _ before: UInt64?) -> Double? {
            guard let before, secs > 0, now >= before else { return nil }
            return Double(now - before) / secs
        }
        let requests = rate(s.server.requests, p?.server.requests)
        let hits = rate(s.server.pageCacheHits, p?.server.pageCacheHits)
        let misses = rate(s.server.pageCacheMisses, p?.server.pageCacheMisses)
        let hitRatio = (hits ?? 0) + (misses ?? 0) > 0 ? 100 * (hits ?? 0) / ((hits ?? 0) + (misses ?? 0)) : nil
        let lsnRate = s.tenant.flatMap { t in rate(t.lastRecordLsn, p?.tenant?.lastRecordLsn) }
        let bytes = s.tenant?.layers.reduce(0 as UInt64) { $0 &+ $1.size } ?? 0
        if global.json {
            var o: [String: Any] = [
                "time": Self.clock(), "connections": s.server.connections, "requests": s.server.requests,
                "page_cache_hits": s.server.pageCacheHits, "page_cache_misses": s.server.pageCacheMisses,
            ]
            if let requests { o["requests_per_sec"] = requests }
            if let hitRatio { o["cache_hit_percent"] = hitRatio }
            if let t = s.tenant {
                o["tenant"] = [
                    "tenant_id": t.tenantId, "state": t.state, "generation": t.generation, "last_record_lsn": t.lastRecordLsn,
                    "disk_consistent_lsn": t.diskConsistentLsn, "layers": t.layers.count, "layer_bytes": bytes,
                    "compaction_failures": t.compactionFailures, "flush_failures": t.flushFailures,
                    "last_compaction_error": t.lastCompactionError, "last_flush_error": t.lastFlushError,
                ] as [String: Any]
                if let lsnRate { o["lsn_per_sec"] = lsnRate }
            }
            global.printJSON(o)
            fflush(nil)
            return
        }
        let r = { (x: Double?) in x.map { String(format: "%.0f/s", $0) } ?? "-" }
        guard terminal else {
            var line = "time=\(Self.clock()) connections=\(s.server.connections) requests=\(s.server.requests) requests_per_sec=\(r(requests))"
            if let hitRatio { line += String(format: " cache_hit=%.1f%%", hitRatio) }
            if let t = s.tenant {
                line += " state=\(t.state) last_record_lsn=\(t.lastRecordLsn) lsn_per_sec=\(r(lsnRate))"
                line += " behind=\(t.lastRecordLsn &- t.diskConsistentLsn) layers=\(t.layers.count) layer_bytes=\(bytes)"
                line += " compaction_failures=\(t.compactionFailures) flush_failures=\(t.flushFailures)"
            }
            print(line)
            fflush(nil)
            return
        }
        var screen = "\u{1B}[H\u{1B}[2J"
        screen += "layergated \(s.server.version) at \(global.socket) — \(Self.clock()), every \(interval) (Ctrl-C stops)\n\n"
        screen += "  connections \(s.server.connections)   requests \(s.server.requests) (\(r(requests)))\n"
        screen += "  page cache \(s.server.pageCacheCapacity) pages: hits \(r(hits)), misses \(r(misses))"
        screen += (hitRatio.map { String(format: ", %.1f%% hit", $0) } ?? "") + "\n"
        if let t = s.tenant {
            let images = t.layers.filter(\.isImage).count
            screen += "\ntenant \(t.tenantId): \(t.state), generation \(t.generation)\n"
            screen += "  last_record_lsn \(t.lastRecordLsn) (\(r(lsnRate)))   disk_consistent_lsn \(t.diskConsistentLsn) (\(t.lastRecordLsn &- t.diskConsistentLsn) behind)\n"
            screen += "  layers \(t.layers.count) (\(images) image, \(t.layers.count - images) delta), "
                + String(format: "%.1f MiB", Double(bytes) / 1_048_576) + "\n"
            screen += "  compaction failures \(t.compactionFailures)" + (t.lastCompactionError.isEmpty ? "" : ": \(t.lastCompactionError)") + "\n"
            screen += "  flush failures \(t.flushFailures)" + (t.lastFlushError.isEmpty ? "" : ": \(t.lastFlushError)") + "\n"
        }
        print(screen, terminator: "")
        fflush(nil)
    }

    private func showUnreachable(_ error: any Error, terminal: Bool) {
        let why = "\(error)"
        if global.json {
            global.printJSON(["time": Self.clock(), "error": why])
        } else if terminal {
            print("\u{1B}[H\u{1B}[2J\(Self.clock()): no answer from \(global.socket): \(why); trying again every \(interval)")
        } else {
            print("time=\(Self.clock()) error=\"\(why)\"")
        }
        fflush(nil)
    }

    private static func clock() -> String {
        let f = DateFormatter()
        f.dateFormat = "HH:mm:ss"
        return f.string(from: Date())
    }
}
