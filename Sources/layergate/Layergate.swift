// layergate: the admin CLI for layergated. Every request of the wire
// protocol, plus `bench`. Human-readable output, `--json` for scripts; the exit
// status is non-zero on any error, with the server's message.
import ArgumentParser
import Foundation
import LayerGateClient
import LayerGateWire

@main
struct Layergate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layergate",
        abstract: "Talk to a LayerGate page server.",
        discussion: "--socket, --token, --timeout and --json may come before or after the subcommand; keygen, token, torture and rebuild-index do not use them.",
        subcommands: [CreateTenant.self, Tenants.self, Status.self, Put.self, GetPage.self, Compact.self, ResetTenant.self,
                      Attach.self, Detach.self, FirstReads.self, FailpointCommand.self, Bench.self, Torture.self, RebuildIndex.self, Keygen.self, TokenCommand.self])

    /// `--socket`, `--token`, `--timeout` and `--json` may also come before the
    /// subcommand (`layergate --socket S status`): the root declares the same
    /// option group as each subcommand, and ArgumentParser hands the values down.
    @OptionGroup var global: GlobalOptions
}

struct GlobalOptions: ParsableArguments {
    @Option(help: "The server's Unix socket.") var socket = Defaults.socketPath
    @Option(help: "A token to send (when the server checks them); default: $LAYERGATE_TOKEN.") var token: String?
    @Flag(help: "Print JSON instead of text.") var json = false
    @Option(help: "Seconds without a byte from the server before a command gives up (0: wait for ever).")
    var timeout: Double = 300

    var effectiveToken: String { token ?? ProcessInfo.processInfo.environment["LAYERGATE_TOKEN"] ?? "" }

    func validate() throws {
        guard timeout.isFinite, timeout >= 0 else { throw ValidationError("--timeout is seconds, 0 or more (0: wait for ever)") }
    }

    /// Nil: no limit.
    var effectiveTimeout: Duration? { timeout > 0 ? .milliseconds(Int64(min(timeout, 1e9) * 1000)) : nil }

    func connect() async throws -> LayerGateClient {
        do {
            return try await LayerGateClient.connect(socketPath: socket, token: effectiveToken, timeout: effectiveTimeout)
        } catch {
            throw CLIError("cannot connect to \(socket): \(error) (is layergated running?)")
        }
    }

    /// Runs `body` with a connection, turning server errors into a clear exit.
    func with<T>(_ body: (LayerGateClient) async throws -> T) async throws -> T {
        let c = try await connect()
        do {
            let r = try await body(c)
            await c.close()
            return r
        } catch let e as ClientError {
            await c.close()
            throw CLIError("\(e)")
        } catch {
            await c.close()
            throw error
        }
    }

    func printJSON(_ object: Any) {
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
           let s = String(data: data, encoding: .utf8) { print(s) }
    }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

struct KeyOptions: ParsableArguments {
    @Option(help: "Tablespace OID.") var spc: UInt32 = 1663
    @Option(help: "Database OID.") var db: UInt32 = 5
    @Option(help: "Relation number.") var rel: UInt32
    @Option(help: "Fork number.") var fork: UInt32 = 0
    @Option(help: "Block number.") var block: UInt32
    var key: Wire.PageKey { Wire.PageKey(spcOid: spc, dbOid: db, relNumber: rel, fork: fork, block: block) }
}

struct CreateTenant: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a tenant (32 hex digits).")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    func run() async throws {
        try await global.with { try await $0.createTenant(tenant) }
        if global.json { global.printJSON(["tenant_id": tenant.lowercased()]) } else { print("created tenant \(tenant.lowercased())") }
    }
}

struct Tenants: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List tenants.")
    @OptionGroup var global: GlobalOptions
    func run() async throws {
        let ids = try await global.with { try await $0.listTenants() }
        if global.json { global.printJSON(["tenant_ids": ids]) } else { ids.forEach { print($0) } }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A tenant's status, or the server's without a tenant.")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String?
    @Flag(help: "Refresh until interrupted: a live view on a terminal, a line per refresh into a pipe (--json: an object per line).")
    var watch = false
    @Option(help: "Seconds between refreshes with --watch.") var interval: Double = 1
    @Option(help: "With --watch, stop after this many refreshes.") var count: Int?

    func validate() throws {
        guard interval.isFinite, interval >= 0.05, interval <= 86_400 else { throw ValidationError("--interval is seconds, from 0.05 to 86400") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if !watch, count != nil { throw ValidationError("--count goes with --watch") }
    }

    func run() async throws {
        if watch {
            try await StatusWatch(global: global, tenant: tenant, interval: .milliseconds(Int64(interval * 1000)), count: count).run()
            return
        }
        if let tenant {
            let s = try await global.with { try await $0.tenantStatus(tenant) }
            if global.json {
                global.printJSON([
                    "tenant_id": s.tenantId, "state": s.state, "last_record_lsn": s.lastRecordLsn,
                    "disk_consistent_lsn": s.diskConsistentLsn, "generation": s.generation,
                    "compaction_failures": s.compactionFailures, "last_compaction_error": s.lastCompactionError,
                    "flush_failures": s.flushFailures, "last_flush_error": s.lastFlushError,
                    "wal_tail_cuts": s.walTailCuts, "last_wal_tail_cut": s.lastWalTailCut,
                    "remote_consistent_lsn": s.remoteConsistentLsn, "layers_pending_upload": s.layersPendingUpload,
                    "remote_upload_error": s.remoteUploadError,
                    "layers": s.layers.map { ["name": $0.name, "is_image": $0.isImage, "lsn_start": $0.lsnStart,
                                              "lsn_end": $0.lsnEnd, "size": $0.size] as [String: Any] },
                ])
                return
            }
            print("tenant \(s.tenantId): \(s.state), generation \(s.generation)")
            print("  last_record_lsn \(s.lastRecordLsn), disk_consistent_lsn \(s.diskConsistentLsn)")
            print("  \(s.layers.count) layers, \(s.layers.reduce(0 as UInt64) { let (s, o) = $0.addingReportingOverflow($1.size); return o ? .max : s }) bytes; compaction failures \(s.compactionFailures)"
                  + (s.lastCompactionError.isEmpty ? "" : " (last: \(s.lastCompactionError))"))
            print("  flush failures \(s.flushFailures)" + (s.lastFlushError.isEmpty ? "" : " (last: \(s.lastFlushError))"))
            if s.walTailCuts > 0 { print("  WAL tails cut at load: \(s.walTailCuts) (last: \(s.lastWalTailCut))") }
            if s.remoteConsistentLsn > 0 || s.layersPendingUpload > 0 || !s.remoteUploadError.isEmpty {
                let lag = s.diskConsistentLsn >= s.remoteConsistentLsn ? s.diskConsistentLsn - s.remoteConsistentLsn : 0
                print("  remote: consistent up to \(s.remoteConsistentLsn) (\(lag) of LSN behind disk), \(s.layersPendingUpload) layers pending upload"
                      + (s.remoteUploadError.isEmpty ? "" : " (\(s.remoteUploadError))"))
            }
            for l in s.layers { print("    \(l.isImage ? "image" : "delta") \(l.lsnStart)-\(l.lsnEnd) \(l.size) \(l.name)") }
        } else {
            let s = try await global.with { try await $0.serverStatus() }
            if global.json {
                global.printJSON(["version": s.version, "page_cache_capacity": s.pageCacheCapacity, "page_cache_hits": s.pageCacheHits,
                                  "page_cache_misses": s.pageCacheMisses, "requests": s.requests, "connections": s.connections])
                return
            }
            print("layergated \(s.version): \(s.connections) connections, \(s.requests) requests")
            print("  page cache \(s.pageCacheCapacity) pages, \(s.pageCacheHits) hits, \(s.pageCacheMisses) misses")
        }
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Store records: JSON lines from a file (or -), or --generate N synthetic images.",
        discussion: """
        A line: {"key": {"spc_oid": 1663, "db_oid": 5, "rel_number": 1000, "fork": 0, "block": 7}, "lsn": 42,
                 "image": "<base64 of 8192 bytes>"}
             or ... "delta": {"will_init": false, "patches": [{"offset": 0, "data": "<base64>"}]}
        """)
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    @Option(help: "JSON lines file, or - for standard input.") var file: String?
    @Option(help: "Put N synthetic 8 KiB images (blocks 0..<keys of rel 1000) instead of a file.") var generate: Int?
    @Option(help: "With --generate: how many distinct blocks.") var keys = 1000
    @Option(help: "Records per PutRecords request.") var batch = 64
    @Option(help: "PutRecords requests in flight at once on the connection (the server applies them in the order sent).")
    var pipeline = 1

    func run() async throws {
        guard (file == nil) != (generate == nil) else { throw ValidationError("give either --file or --generate") }
        guard pipeline >= 1, batch >= 1 else { throw ValidationError("--pipeline and --batch must be at least 1") }
        let last = try await global.with { c in
            if let n = generate {
                var lsn = try await c.tenantStatus(tenant).lastRecordLsn
                var sent = 0, done = 0
                var inFlight: [(pending: LayerGateClient.Pending, count: Int)] = []
                var lastAcked = lsn
                let start = Date()
                // A progress line rewritten in place means something only on a terminal: in a pipe or a log it is thousands of lines.
                let showProgress = !global.json && isatty(STDERR_FILENO) != 0
                /// Waits for the oldest put in flight.
                func settle() async throws {
                    let (pending, count) = inFlight.removeFirst()
                    guard case .putRecords(let p) = try await pending.response() else { throw CLIError("unexpected answer to PutRecords") }
                    lastAcked = p.lastRecordLsn
                    done += count
                    if showProgress {
                        let mib = Double(done) * 8192 / 1048576
                        FileHandle.standardError.write(String(format: "\rput %d/%d records (%.1f MiB, %.1f MiB/s)", done, n, mib,
                                                              mib / max(0.001, Date().timeIntervalSince(start))).data(using: .utf8)!)
                    }
                }
                func settleOrReport() async throws {
                    do { try await settle() } catch {
                        if showProgress { FileHandle.standardError.write("\n".data(using: .utf8)!) }
                        Self.reportStored(done, of: n, last: lastAcked)
                        throw error
                    }
                }
                while sent < n {
                    let records = (0..<min(batch, n - sent)).map { i -> Wire.Record in
                        lsn += 1
                        let b = UInt32((sent + i) % keys)
                        var page = [UInt8](repeating: UInt8(truncatingIfNeeded: lsn), count: 8192)
                        withUnsafeBytes(of: lsn.bigEndian) { page.replaceSubrange(0..<8, with: $0) }
                        return Wire.Record(key: Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: b), lsn: lsn,
                                           value: .image(page))
                    }
                    sent += records.count
                    inFlight.append((c.send(.putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: records))), records.count))
                    if inFlight.count >= pipeline { try await settleOrReport() }
                }
                while !inFlight.isEmpty { try await settleOrReport() }
                if showProgress { FileHandle.standardError.write("\n".data(using: .utf8)!) }
                return (lastAcked, done)
            }
            let text: String
            if file == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else {
                text = try String(contentsOfFile: file!, encoding: .utf8)
            }
            var records: [Wire.Record] = []
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                records.append(try RecordLine.parse(line, line: n + 1))
            }
            var last: UInt64 = 0
            for start in stride(from: 0, to: records.count, by: batch) {
                do {
                    last = try await c.putRecords(tenant: tenant, Array(records[start..<min(start + batch, records.count)]))
                } catch {
                    Self.reportStored(start, of: records.count, last: last)
                    throw error
                }
            }
            return (last, records.count)
        }
        if global.json { global.printJSON(["last_record_lsn": last.0, "records": last.1]) } else {
            print("stored \(last.1) records; last_record_lsn \(last.0)")
        }
    }

    /// Before a put's error: what the puts before it stored, which stays stored.
    private static func reportStored(_ stored: Int, of total: Int, last: UInt64) {
        let lsn = stored > 0 ? "; last_record_lsn \(last)" : ""
        FileHandle.standardError.write("layergate put: \(stored) of \(total) records were stored before this error\(lsn)\n".data(using: .utf8)!)
    }
}

struct GetPage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read a page as of an LSN (or the latest).")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    @OptionGroup var key: KeyOptions
    @Option(help: "LSN to read at (default: the latest).") var lsn: UInt64?
    @Option(help: "How long (ms) to wait for an LSN not yet ingested (0: the server's default).") var waitMs: UInt32 = 0
    @Option(name: .shortAndLong, help: "Write the 8192 bytes to this file (- for standard output).") var output: String?

    func run() async throws {
        let p = try await global.with { try await $0.getPage(tenant: tenant, key: key.key, lsn: lsn, waitMs: waitMs) }
        if let output {
            if output == "-" { FileHandle.standardOutput.write(Data(p.page)) } else {
                try Data(p.page).write(to: URL(fileURLWithPath: output))
            }
            return
        }
        if global.json {
            global.printJSON(["lsn": p.lsn, "page": Data(p.page).base64EncodedString()])
            return
        }
        print("page \(key.key.relNumber).\(key.key.fork)#\(key.key.block) at LSN \(p.lsn): \(p.page.count) bytes")
        for row in stride(from: 0, to: min(64, p.page.count), by: 16) {
            print(String(format: "  %04x  ", row) + p.page[row..<min(row + 16, p.page.count)].map { String(format: "%02x", $0) }.joined(separator: " "))
        }
        print("  …  (\(p.page.filter { $0 != 0 }.count) non-zero bytes)")
    }
}

struct Compact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Flush and compact a tenant now.")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    @Flag(help: "Write image layers regardless of the threshold.") var forceImageLayers = false
    func run() async throws {
        let r = try await global.with { try await $0.compact(tenant: tenant, forceImageLayers: forceImageLayers) }
        if global.json { global.printJSON(["layers_created": r.layersCreated, "layers_removed": r.layersRemoved, "bytes_written": r.bytesWritten]) }
        else {
            let layers = r.layersCreated == 1 ? "1 layer" : "\(r.layersCreated) layers"
            print("created \(layers), removed \(r.layersRemoved), wrote \(r.bytesWritten) bytes")
        }
    }
}

struct ResetTenant: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reload a tenant from its index and WAL (sweeping unlisted files).")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    @Flag(help: "Also drop its cached pages.") var dropCache = false
    func run() async throws {
        let r = try await global.with { try await $0.resetTenant(tenant, dropCache: dropCache) }
        if global.json { global.printJSON(["generation": r.generation, "files_swept": r.filesSwept]) }
        else { print("tenant reset: generation \(r.generation), \(r.filesSwept) files swept") }
    }
}

struct Attach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a tenant from remote storage (server needs --remote-storage).",
        discussion: "Reads the newest remote index of a generation below GENERATION, downloads its layers and serves the tenant; what this server writes then carries GENERATION. Give a generation above any a server has used for the tenant: each restart of the attached server uses the next one.")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    @Argument(help: "The generation this server writes under.") var generation: UInt64
    func run() async throws {
        let r = try await global.with { try await $0.attachTenant(tenant, generation: generation) }
        if global.json { global.printJSON(["generation": r.generation, "layers": r.layers]) }
        else { print("tenant attached: generation \(r.generation), \(r.layers) layers") }
    }
}

struct Detach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Flush a tenant, upload all of it, then remove it from this server.")
    @OptionGroup var global: GlobalOptions
    @Argument var tenant: String
    func run() async throws {
        let r = try await global.with { try await $0.detachTenant(tenant) }
        if global.json { global.printJSON(["remote_consistent_lsn": r.remoteConsistentLsn]) }
        else { print("tenant detached: remote copy consistent up to LSN \(r.remoteConsistentLsn)") }
    }
}

struct FailpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "failpoint",
                                                    abstract: "Set a failpoint (server needs --enable-failpoints).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Failpoint name, e.g. compaction-after-first-output.") var name: String
    @Argument(help: "off, return, exit, sleep(MS) or pause.") var action: String
    func run() async throws {
        try await global.with { try await $0.configureFailpoints([Wire.Failpoint(name: name, action: action)]) }
        if global.json { global.printJSON(["name": name, "action": action]) } else { print("failpoint \(name) = \(action)") }
    }
}
