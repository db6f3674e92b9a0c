import ArgumentParser
import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs a layergated subprocess through crashes and full disks for a while,
/// checking every acknowledged record against a model after each restart.
struct Torture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Crash, fill and starve a layergated while it ingests, reads, compacts and resets; verify after each restart.",
        discussion: """
            Each round starts the server on the same data directory, checks every tenant against the model \
            (state active, last_record_lsn at least what was acknowledged, every acknowledged record within \
            the GC horizon and every key's latest page byte for byte), then runs ingest, reads, compactions \
            and resets while faults come: a full disk (a tmpfs filled to the brim when run as root, else the \
            disk-full failpoint), no descriptors (the no-descriptors failpoint), and the end of the round: \
            SIGKILL, a failpoint `exit` at a random point, or SIGTERM. Every other round reads layer files \
            directly (--layer-reads direct), so misses are read by the event loop's io_uring. Exit status 1 \
            when any violation was seen.
            """)

    @Option(help: "How long to run, in minutes.") var minutes = 1.0
    @Option(help: "The layergated binary (default: the one next to this layergate).") var server: String?
    @Option(help: "Working directory (default: a new temp directory, removed at the end).") var dir: String?
    @Option(help: "Tenants to run at once.") var tenants = 2
    @Option(help: "Seed of the random choices (default: from the clock).") var seed: UInt64?
    @Option(help: "Size of the tmpfs the data lives on when run as root, MiB.") var tmpfsMib = 256
    @Flag(help: "Do not mount a tmpfs even as root; fill the disk through the disk-full failpoint.") var noTmpfs = false
    @Flag(help: "Keep the working directory.") var keep = false

    func run() async throws {
        guard minutes > 0, tenants >= 1, tenants <= 16, tmpfsMib >= 64 else {
            throw ValidationError("--minutes must be positive, --tenants 1…16, --tmpfs-mib at least 64")
        }
        let binary = server ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("layergated").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw CLIError("no layergated at \(binary) (use --server PATH)")
        }
        let work = try dir ?? Self.makeTempDirectory()
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let seed = self.seed ?? UInt64(Date().timeIntervalSince1970 * 1000)
        let disk = try TortureDisk(work: work, tmpfsMib: getuid() == 0 && !noTmpfs ? tmpfsMib : nil)
        say("torture: \(minutes) min, \(tenants) tenants, seed \(seed), data on \(disk.description), server \(binary)")
        let run = TortureRun(binary: binary, work: work, disk: disk, tenants: tenants, seed: seed)
        await run.run(until: ContinuousClock.now + .milliseconds(Int(minutes * 60_000)))
        disk.tearDown()
        if !keep && dir == nil { try? FileManager.default.removeItem(atPath: work) }
        let t = run.totals
        say("""
            torture: done: \(t.rounds) rounds, \(t.restarts) restarts (\(t.sigkills) SIGKILL, \(t.failpointExits) failpoint exit, \
            \(t.sigterms) SIGTERM); \(t.acked) records acknowledged, \(t.verified) verified; \(t.faults) faults injected \
            (\(t.diskFull) full disk, \(t.noDescriptors) no descriptors, \(t.kills) kills); \
            \(t.refusals) requests refused while faulty; violations: \(t.violations.count)
            """)
        for v in t.violations.prefix(20) { say("torture: VIOLATION: \(v)") }
        if !t.violations.isEmpty {
            say("torture: logs kept in \(work)")
            throw ExitCode(1)
        }
    }

    static func makeTempDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "layergate-torture-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw CLIError("cannot make a temp directory")
        }
        return String(cString: made)
    }
}

/// Where the data lives, and how the disk is filled up on cue.
final class TortureDisk: Sendable, CustomStringConvertible {
    let data: String
    private let tmpfs: MountedTmpfs?

    init(work: String, tmpfsMib: Int?) throws {
        guard let mib = tmpfsMib else {
            data = work + "/data"
            tmpfs = nil
            return
        }
        switch MountedTmpfs.mount(at: work + "/tmpfs", size: "\(mib)m") {
        case .success(let mounted):
            tmpfs = mounted
            data = mounted.path + "/data"
        case .failure(let refusal):
            say("torture: could not mount a tmpfs (\(refusal)); filling the disk through the disk-full failpoint instead")
            tmpfs = nil
            data = work + "/data"
        }
    }

    var description: String { tmpfs.map { "a tmpfs at \($0.path)" } ?? "the working directory (disk-full failpoint)" }
    var isTmpfs: Bool { tmpfs != nil }

    /// Fills the tmpfs to the last byte.
    func fill() {
        guard let point = tmpfs?.path else { return }
        let fd = open(point + "/filler", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        var one: UInt8 = 0
        while write(fd, &one, 1) > 0 {}
    }

    func free() { if let point = tmpfs?.path { unlink(point + "/filler") } }

    func tearDown() { tmpfs?.unmount() }
}

struct TortureTotals {
    var rounds = 0, restarts = 0, sigkills = 0, failpointExits = 0, sigterms = 0
    var acked: UInt64 = 0, verified = 0
    var faults = 0, diskFull = 0, noDescriptors = 0, kills = 0, refusals = 0
    var violations: [String] = []
}

/// One torture run: rounds of start, verify, load and faults, end.
final class TortureRun: Sendable {
    let binary: String
    let work: String
    let disk: TortureDisk
    let socket: String
    let tenantIds: [String]
    private let models: Mutex<[TortureModel]>
    private let state: Mutex<(totals: TortureTotals, rng: UInt64)>

    /// Failpoints where a round may end in `exit`.
    static let exitPoints = [
        "layer-writer-put-value", "layer-writer-before-finish", "layer-writer-before-publish",
        "after-layer-publish-before-index", "index-before-rename", "flush-before-index",
        "flush-after-index-before-wal-truncate", "wal-before-fsync", "compaction-after-first-output",
    ]

    init(binary: String, work: String, disk: TortureDisk, tenants: Int, seed: UInt64) {
        self.binary = binary
        self.work = work
        self.disk = disk
        socket = work + "/layergate.sock"
        tenantIds = (0..<tenants).map { String(format: "7047%028x", $0 + 1) }
        models = Mutex((0..<tenants).map { TortureModel(tenantIndex: UInt64($0)) })
        state = Mutex((TortureTotals(), seed | 1))
    }

    var totals: TortureTotals { state.withLock { $0.totals } }

    func random(_ n: Int) -> Int {
        state.withLock { s in
            s.rng ^= s.rng << 13; s.rng ^= s.rng >> 7; s.rng ^= s.rng << 17
            return Int(s.rng % UInt64(max(1, n)))
        }
    }

    func count(_ update: (inout TortureTotals) -> Void) { state.withLock { update(&$0.totals) } }

    func violation(_ text: String) {
        count { $0.violations.append(text) }
        say("torture: VIOLATION: \(text)")
    }

    func run(until deadline: ContinuousClock.Instant) async {
        let started = ContinuousClock.now
        var round = 0
        while ContinuousClock.now < deadline {
            round += 1
            guard let process = startServer(round: round) else {
                violation("round \(round): layergated did not start (see \(work)/server-\(round).log)")
                return
            }
            guard let client = await connect(process) else {
                violation("round \(round): layergated did not answer on its socket (see \(work)/server-\(round).log)")
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                return
            }
            await verify(client, round: round)
            await load(process: process, client: client, round: round, deadline: deadline)
            await client.close()
            count { t in
                t.rounds = round
                t.acked = models.withLock { $0.reduce(0) { $0 + $1.acked } }
            }
            let t = totals
            let elapsed = Int((ContinuousClock.now - started).components.seconds)
            say("torture: \(elapsed / 60)m\(String(format: "%02d", elapsed % 60))s round \(round): \(t.restarts) restarts, \(t.acked) acknowledged, \(t.verified) verified, \(t.faults) faults, \(t.violations.count) violations")
            if !t.violations.isEmpty { return }
        }
        // A last start: everything acknowledged must still be there.
        if let process = startServer(round: round + 1), let client = await connect(process) {
            await verify(client, round: round + 1)
            await client.close()
            kill(process.processIdentifier, SIGTERM)
            await wait(for: process, upTo: .seconds(30))
        }
    }

    private func startServer(round: Int) -> Process? {
        disk.free()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = [
            "--socket", socket, "--data-dir", disk.data, "--enable-failpoints", "--log-level", "warning",
            "--page-cache-mib", "8", "--checkpoint-distance-mib", "1", "--compaction-period-s", "2",
            "--compaction-threshold", "4", "--image-creation-threshold", "2", "--gc-horizon-mib", "1",
            "--compaction-target-mib", "1", "--disk-reserve-mib", "4", "--wait-lsn-timeout-ms", "2000",
            // Every other round past the OS page cache: misses are then read by the event loop's io_uring.
            "--layer-reads", round % 2 == 0 ? "buffered" : "direct",
        ]
        let log = work + "/server-\(round).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = FileHandle(forWritingAtPath: log)
        p.standardOutput = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        return p
    }

    private func connect(_ process: Process) async -> LayerGateClient? {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline && process.isRunning {
            if let c = try? await LayerGateClient.connect(socketPath: socket) { return c }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    private func wait(for process: Process, upTo limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        if process.isRunning {
            violation("layergated did not exit within \(limit) of a signal")
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }

    // MARK: verification after a (re)start

    /// Every tenant: active; at least what was acknowledged; every record
    /// within the GC horizon read at its LSN, and every key's latest page.
    private func verify(_ c: LayerGateClient, round: Int) async {
        let existing = (try? await c.listTenants()) ?? []
        for (i, id) in tenantIds.enumerated() {
            var model = models.withLock { $0[i] }
            guard existing.contains(id) else {
                if model.acked > 0 { violation("round \(round): tenant \(id) with \(model.acked) acknowledged records is gone") }
                do { try await c.createTenant(id) } catch {
                    violation("round \(round): creating tenant \(id): \(error)")
                }
                continue
            }
            let status: Wire.TenantStatusResponse
            do { status = try await waitActive(c, id) } catch {
                violation("round \(round): tenant \(id): \(error)")
                continue
            }
            let durable = TortureModel.number(ofLsn: status.lastRecordLsn)
            if durable < model.acked {
                violation("round \(round): tenant \(id) recovered to record \(durable), but \(model.acked) were acknowledged")
            }
            // Whatever was stored beyond the acknowledgements is the model's too: acknowledged now.
            model.acked = max(model.acked, durable)
            models.withLock { $0[i].acked = model.acked }
            let frozen = model
            let n = frozen.acked
            guard n > 0 else { continue }
            // Newest first, until the GC horizon says older LSNs are gone.
            let checked = await withTaskGroup(of: (Int, Bool).self) { group -> Int in
                var ok = 0
                var below = false
                var next = n
                func add() {
                    guard next >= 1, !below else { return }
                    let number = next
                    next -= 1
                    group.addTask { await self.check(c, id, frozen, number: number, latest: false, round: round) }
                }
                for _ in 0..<32 { add() }
                while let (result, belowHorizon) = await group.next() {
                    ok += result
                    if belowHorizon { below = true }
                    add()
                }
                return ok
            }
            var latest = 0
            for block in 0..<min(frozen.keys, n) { latest += await check(c, id, frozen, number: block, latest: true, round: round).0 }
            count { $0.verified += checked + latest }
        }
        count { t in t.acked = models.withLock { $0.reduce(0) { $0 + $1.acked } } }
    }

    private func waitActive(_ c: LayerGateClient, _ id: String) async throws -> Wire.TenantStatusResponse {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let s = try await c.tenantStatus(id)
            if s.state == "active" { return s }
            if s.state == "broken" { throw CLIError("broken: \(s.lastCompactionError)") }
            guard ContinuousClock.now < deadline else { throw CLIError("still \(s.state) after 60 s") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Reads one page and compares it with the model. `latest`: the newest
    /// page of block `number`; else the page of record `number`'s key at its LSN.
    /// Returns (1 if verified, whether the LSN was below the GC horizon).
    private func check(_ c: LayerGateClient, _ id: String, _ model: TortureModel, number: UInt64, latest: Bool, round: Int)
        async -> (Int, Bool)
    {
        let block = latest ? number : model.block(of: number)
        let key = model.key(block: block)
        do {
            let r = try await c.getPage(tenant: id, key: key, lsn: latest ? nil : TortureModel.lsn(number))
            let at = TortureModel.number(ofLsn: r.lsn)
            guard let want = model.page(block: block, atNumber: at) else {
                violation("round \(round): tenant \(id) block \(block) has a page at record \(at), the model none")
                return (0, false)
            }
            if r.page != want { violation("round \(round): tenant \(id) block \(block) at record \(at): wrong bytes") }
            return (r.page == want ? 1 : 0, false)
        } catch ClientError.server(.lsnBelowGcHorizon, _) {
            return (0, true)
        } catch {
            violation("round \(round): tenant \(id) block \(block) at record \(number): \(error)")
            return (0, false)
        }
    }

    // MARK: a round of load and faults

    private func load(process: Process, client: LayerGateClient, round: Int, deadline: ContinuousClock.Instant) async {
        let roundLength = Duration.milliseconds(3_000 + random(9_000))
        let end = min(deadline, ContinuousClock.now + roundLength)
        await withTaskGroup(of: Void.self) { group in
            for i in tenantIds.indices {
                group.addTask { await self.ingest(tenant: i, round: round) }
                group.addTask { await self.read(tenant: i, round: round) }
            }
            group.addTask { await self.maintain(round: round) }
            group.addTask { await self.faults(process: process, admin: client, until: end, round: round) }
        }
    }

    private func connectWorker() async -> LayerGateClient? { try? await LayerGateClient.connect(socketPath: socket) }

    /// Puts batches of the model's records, in order, until the server goes.
    private func ingest(tenant i: Int, round: Int) async {
        guard let c = await connectWorker() else { return }
        defer { Task { await c.close() } }
        let id = tenantIds[i]
        while true {
            let model = models.withLock { $0[i] }
            let first = model.acked + 1
            let batch = (first..<first + UInt64(1 + random(16))).map(model.record)
            do {
                let last = try await c.putRecords(tenant: id, batch)
                let n = TortureModel.number(ofLsn: last)
                if n < first + UInt64(batch.count) - 1 { violation("round \(round): a put of records up to \(first + UInt64(batch.count) - 1) answered \(n)") }
                models.withLock { $0[i].acked = max($0[i].acked, n) }
            } catch ClientError.server(let code, let message) {
                count { $0.refusals += 1 }
                if code == .invalidArgument {
                    // Stored after all (an earlier answer lost to a fault): catch up from the server.
                    if let s = try? await c.tenantStatus(id) {
                        models.withLock { $0[i].acked = max($0[i].acked, TortureModel.number(ofLsn: s.lastRecordLsn)) }
                    }
                } else if code == .internal && !message.contains("failpoint") {
                    violation("round \(round): tenant \(id): put answered INTERNAL: \(message)")
                }
                try? await Task.sleep(for: .milliseconds(20 + random(80)))
            } catch {
                return
            }
        }
    }

    /// Random reads of acknowledged records, and of the latest pages.
    private func read(tenant i: Int, round: Int) async {
        guard let c = await connectWorker() else { return }
        defer { Task { await c.close() } }
        let id = tenantIds[i]
        while true {
            let model = models.withLock { $0[i] }
            guard model.acked > 0 else {
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            let window = min(model.acked, 2000)
            let number = model.acked - UInt64(random(Int(window)))
            let latest = random(4) == 0
            let block = latest ? UInt64(random(Int(min(model.keys, model.acked)))) : model.block(of: number)
            do {
                let r = try await c.getPage(tenant: id, key: model.key(block: block), lsn: latest ? nil : TortureModel.lsn(number),
                                            waitMs: 100)
                let at = TortureModel.number(ofLsn: r.lsn)
                if at < (latest ? 0 : number) { violation("round \(round): read at \(number) answered at \(at)") }
                let want = models.withLock { $0[i] }.page(block: block, atNumber: at)
                if r.page != want { violation("round \(round): tenant \(id) block \(block) at record \(at): wrong bytes on a live read") }
                count { $0.verified += 1 }
            } catch ClientError.server(let code, let message) {
                switch code {
                case .lsnBelowGcHorizon, .tenantUnavailable, .resourceExhausted: break
                case .internal where message.contains("failpoint"): break
                default: violation("round \(round): tenant \(id): read answered \(code.name): \(message)")
                }
                try? await Task.sleep(for: .milliseconds(5))
            } catch {
                return
            }
        }
    }

    /// Compactions (with images every other time, so GC runs) and resets.
    private func maintain(round: Int) async {
        guard let c = await connectWorker() else { return }
        defer { Task { await c.close() } }
        while true {
            try? await Task.sleep(for: .milliseconds(300 + random(1500)))
            let id = tenantIds[random(tenantIds.count)]
            do {
                if random(5) == 0 {
                    _ = try await c.resetTenant(id, dropCache: random(2) == 0)
                } else {
                    _ = try await c.compact(tenant: id, forceImageLayers: random(2) == 0)
                }
            } catch ClientError.server(let code, let message) {
                count { $0.refusals += 1 }
                if code == .internal && !message.contains("failpoint") {
                    violation("round \(round): tenant \(id): maintenance answered INTERNAL: \(message)")
                }
                if code == .tenantUnavailable && message.contains("broken") {
                    violation("round \(round): tenant \(id) is broken: \(message)")
                }
            } catch {
                return
            }
        }
    }

    /// Full disks and missing descriptors for a moment now and then; at the
    /// end of the round, a SIGKILL, a failpoint `exit`, or a SIGTERM.
    private func faults(process: Process, admin c: LayerGateClient, until end: ContinuousClock.Instant, round: Int) async {
        while ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(500 + random(2000)))
            guard ContinuousClock.now < end, process.isRunning else { break }
            switch random(4) {
            case 0:
                count { $0.faults += 1; $0.diskFull += 1 }
                if disk.isTmpfs { disk.fill() } else { try? await c.configureFailpoints([Wire.Failpoint(name: "disk-full", action: "return")]) }
                try? await Task.sleep(for: .milliseconds(300 + random(1500)))
                if disk.isTmpfs { disk.free() } else { try? await c.configureFailpoints([Wire.Failpoint(name: "disk-full", action: "off")]) }
            case 1:
                count { $0.faults += 1; $0.noDescriptors += 1 }
                try? await c.configureFailpoints([Wire.Failpoint(name: "no-descriptors", action: "return")])
                try? await Task.sleep(for: .milliseconds(200 + random(800)))
                try? await c.configureFailpoints([Wire.Failpoint(name: "no-descriptors", action: "off")])
            default:
                break
            }
        }
        guard process.isRunning else {
            violation("round \(round): layergated exited by itself (status \(process.terminationStatus)); see \(work)/server-\(round).log")
            return
        }
        switch random(10) {
        case 0..<5:
            kill(process.processIdentifier, SIGKILL)
            count { $0.sigkills += 1; $0.kills += 1; $0.faults += 1 }
        case 5..<9:
            let point = Self.exitPoints[random(Self.exitPoints.count)]
            try? await c.configureFailpoints([Wire.Failpoint(name: point, action: "exit")])
            let deadline = ContinuousClock.now + .seconds(4)
            while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                count { $0.sigkills += 1; $0.kills += 1; $0.faults += 1 }
            } else {
                count { $0.failpointExits += 1; $0.kills += 1; $0.faults += 1 }
            }
        default:
            disk.free()
            kill(process.processIdentifier, SIGTERM)
            count { $0.sigterms += 1 }
        }
        await wait(for: process, upTo: .seconds(30))
        disk.free()
        count { $0.restarts += 1 }
    }
}

/// A line to standard output at once (not buffered), so progress shows in a log file as it happens.
func say(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}
