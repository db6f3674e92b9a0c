import Foundation
import Glibc
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Synchronization
import Testing

/// Real faults against the real server (issue 9): a second process on the
/// data directory, a disk that fills up (a real tmpfs when root, else the
/// `disk-full` failpoint), descriptors running out.
@Suite("layergated under real faults", .serialized)
struct ServerFaultTests {
    /// Issue 9.5: a second layergated on the same data directory, with another
    /// socket, refuses to start (exit 2) and names the first one's pid.
    @Test func aSecondServerOnTheSameDataDirectoryRefusesToStart() async throws {
        let dir = ServerDir()
        let first = try await ServerProcess(dir: dir)
        let second = try await runToExit(try builtExecutable("layergated").path,
                                         ["--socket", dir.path + "/other.sock", "--data-dir", dir.data])
        let text = second.stderr
        #expect(second.status == 2, "\(text)")
        #expect(text.contains("pid \(first.process.processIdentifier)"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/other.sock"))
        let c = try await first.client()
        #expect(try await c.listTenants().isEmpty)
        await c.close()
        #expect(await first.stop() == 0)
        // The lock went with the process: the next server starts.
        let third = try await ServerProcess(dir: dir)
        #expect(await third.stop() == 0)
    }

    /// Issue 9.7 over the socket: a full disk answers RESOURCE_EXHAUSTED, not
    /// INTERNAL; status shows flush and compaction failures; all resumes.
    @Test func aFullDiskAnswersResourceExhausted() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--enable-failpoints", "--compaction-period-s", "3600"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        _ = try await c.putRecords(tenant: tenantA, [wimage(1, 10)])
        try await c.configureFailpoints([Wire.Failpoint(name: "disk-full", action: "return")])
        await expectServerError(.resourceExhausted) { try await c.putRecords(tenant: tenantA, [wimage(1, 11)]) }
        await expectServerError(.resourceExhausted) { try await c.compact(tenant: tenantA) }
        let during = try await c.tenantStatus(tenantA)
        #expect(during.state == "active")
        #expect(during.compactionFailures == 1 && during.flushFailures == 1, "\(during)")
        #expect(during.lastFlushError.contains("No space left on device"), "\(during.lastFlushError)")
        #expect(!during.lastFlushError.contains(dir.path), "no server paths in messages: \(during.lastFlushError)")
        await expectServerError(.resourceExhausted) { try await c.createTenant("ffffffffffffffffffffffffffffffff") }
        try await c.configureFailpoints([Wire.Failpoint(name: "disk-full", action: "off")])
        #expect(try await c.putRecords(tenant: tenantA, [wimage(1, 11)]) == 11)
        _ = try await c.compact(tenant: tenantA, forceImageLayers: true)
        let after = try await c.tenantStatus(tenantA)
        #expect(after.compactionFailures == 0 && after.lastCompactionError.isEmpty)
        #expect(after.flushFailures == 0 && after.lastFlushError.isEmpty)
        #expect(try await c.listTenants() == [tenantA], "the failed create left nothing")
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Issue 9 on a real disk: a tmpfs fills during ingest and during
    /// compaction, then space comes back. Clear RESOURCE_EXHAUSTED answers,
    /// nothing acknowledged lost, the tenant never broken, compaction resumes
    /// with no reset.
    @Test func aRealTmpfsFillsUpAndRecovers() async throws {
        let dir = ServerDir()
        guard let tmpfs = MountedTmpfs.mount(at: dir.path + "/tmpfs", size: "24m", test: "aRealTmpfsFillsUpAndRecovers") else { return }
        let mountPoint = tmpfs.path
        defer {
            tmpfs.unmount()
            withExtendedLifetime(dir) {}
        }
        let data = mountPoint + "/data"
        var server = try await ServerProcess(
            dir: dir,
            extraArgs: ["--enable-failpoints", "--checkpoint-distance-mib", "1", "--disk-reserve-mib", "1",
                        "--compaction-period-s", "3600", "--gc-horizon-mib", "0", "--compaction-target-mib", "1"],
            dataDir: data)
        var c = try await server.client()
        try await c.createTenant(tenantA)
        func expectActive(_ when: String) async throws {
            let s = try await c.tenantStatus(tenantA)
            #expect(s.state == "active", "\(when): \(s.state)")
        }
        // 1. Ingest until the disk is nearly full.
        var lsn: UInt64 = 0
        var acked: UInt64 = 0
        var refusal: String?
        while refusal == nil && lsn < 20_000 {
            let batch = (1...16 as ClosedRange<UInt64>).map { wimage(UInt32((lsn + $0) % 120), lsn + $0) }
            do {
                acked = try await c.putRecords(tenant: tenantA, batch)
                lsn += 16
            } catch let ClientError.server(code, message) {
                #expect(code == .resourceExhausted, "\(message)")
                refusal = message
            }
        }
        #expect(refusal?.contains("nearly full") == true || refusal?.contains("No space") == true, "\(refusal ?? "")")
        #expect(acked > 100, "the disk took a fair amount first: \(acked) records")
        try await expectActive("after ingest filled the disk")
        // 2. Something else takes the rest of the disk: every write fails now.
        // The server may free space after the filler took it (a flush that was
        // under way deletes a WAL segment), and a write into the WAL's
        // preallocated room may still succeed: take the freed space too, until
        // a put is refused.
        let filler = mountPoint + "/filler"
        var fillers = 0
        var putRefused = false
        while !putRefused && fillers < 10 {
            fill(filler + "\(fillers)")
            fillers += 1
            do {
                acked = try await c.putRecords(tenant: tenantA, [wimage(UInt32((lsn + 1) % 120), lsn + 1)])
                lsn += 1
            } catch let ClientError.server(code, message) {
                #expect(code == .resourceExhausted, "\(message)")
                putRefused = true
            }
        }
        #expect(putRefused, "a put on a full disk is refused")
        // Files the server let go of before the filler came (an earlier compaction's inputs, WAL
        // segments) may be deleted only now: take that space too, until none comes back for 0.3 s.
        var quiet = 0
        for _ in 0..<50 where quiet < 3 {
            try await Task.sleep(for: .milliseconds(100))
            if freeBytes(mountPoint) > 0 {
                fill(filler + "\(fillers)")
                fillers += 1
                quiet = 0
            } else {
                quiet += 1
            }
        }
        await expectServerError(.resourceExhausted) { try await c.compact(tenant: tenantA, forceImageLayers: true) }
        #expect(try await c.tenantStatus(tenantA).compactionFailures >= 1)
        try await expectActive("with the disk full")
        // 3. Space comes back: compaction (which includes the flush) resumes, no reset.
        for i in 0..<fillers { unlink(filler + "\(i)") }
        _ = try await c.compact(tenant: tenantA, forceImageLayers: true)
        #expect(try await c.tenantStatus(tenantA).compactionFailures == 0)
        // 4. The disk fills while a compaction is under way.
        for _ in 0..<4 {
            let batch = (1...16 as ClosedRange<UInt64>).map { wimage(UInt32((lsn + $0) % 120), lsn + $0) }
            acked = try await c.putRecords(tenant: tenantA, batch)
            lsn += 16
        }
        try await c.configureFailpoints([Wire.Failpoint(name: "compaction-after-first-output", action: "pause")])
        let client = c
        let compaction = Task { try await client.compact(tenant: tenantA, forceImageLayers: true) }
        try await Task.sleep(for: .milliseconds(300))
        fill(filler + "0")
        try await c.configureFailpoints([Wire.Failpoint(name: "compaction-after-first-output", action: "off")])
        let result = await compaction.result
        if case .failure(let error) = result {
            guard case ClientError.server(let code, _) = error, code == .resourceExhausted else {
                Issue.record("a compaction on a full disk failed with \(error)")
                return
            }
        }
        try await expectActive("after a compaction hit the full disk")
        unlink(filler + "0")
        _ = try await c.compact(tenant: tenantA, forceImageLayers: true)
        #expect(try await c.tenantStatus(tenantA).compactionFailures == 0)
        // 5. A restart: every acknowledged record is there.
        await c.close()
        #expect(await server.stop() == 0)
        server = try await ServerProcess(dir: dir, extraArgs: ["--gc-horizon-mib", "0"], dataDir: data)
        c = try await server.client()
        let status = try await c.tenantStatus(tenantA)
        #expect(status.state == "active" && status.lastRecordLsn >= acked)
        for block in 0..<120 as Range<UInt32> {
            // The newest acknowledged LSN of this block.
            var last = acked - (acked % 120) + UInt64(block)
            if last > acked { last -= 120 }
            guard last >= 1 else { continue }
            let p = try await c.getPage(tenant: tenantA, key: wkey(block))
            #expect(p.page == wpage(UInt64(block) << 32 | last), "block \(block)")
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// The disk budget on a real disk, with no reserve and no compaction room
    /// to borrow from: the smallest records (a 4-byte delta behind a 42-byte
    /// index entry) fill a tmpfs to the line, in halving batches down to one
    /// record, and the flush of everything acknowledged still fits, because
    /// the room ingest keeps for it bounds what it writes. With several
    /// tenants filling at once, each tenant's commits are admitted by its own
    /// leader at the same time as the others'. After a restart the records
    /// are there.
    @Test(arguments: [1, 4])
    func theSmallestRecordsFillARealTmpfsAndStillFlush(tenants: Int) async throws {
        let dir = ServerDir()
        guard let tmpfs = MountedTmpfs.mount(at: dir.path + "/tmpfs", size: "8m", test: "theSmallestRecordsFillARealTmpfsAndStillFlush") else { return }
        defer {
            tmpfs.unmount()
            withExtendedLifetime(dir) {}
        }
        let data = tmpfs.path + "/data"
        let args = ["--disk-reserve-mib", "0", "--checkpoint-distance-mib", "64", "--compaction-period-s", "3600"]
        var server = try await ServerProcess(dir: dir, extraArgs: args, dataDir: data)
        let ids = (0..<tenants).map { String(format: "5a11%028x", $0) }
        var clients: [LayerGateClient] = []
        for id in ids {
            let c = try await server.client()
            try await c.createTenant(id)
            clients.append(c)
        }
        let acked = try await withThrowingTaskGroup(of: (Int, UInt64).self) { group in
            for (i, c) in clients.enumerated() {
                group.addTask { (i, try await Self.fillWithSmallestRecords(c, tenant: ids[i])) }
            }
            var acked = [UInt64](repeating: 0, count: tenants)
            for try await (i, last) in group { acked[i] = last }
            return acked
        }
        #expect(acked.reduce(0, +) > 40_000, "the disk took \(acked) records")
        for (i, c) in clients.enumerated() {
            // A compaction flushes first: that flush must fit; what follows it may not.
            _ = try? await c.compact(tenant: ids[i], forceImageLayers: false)
            let status = try await c.tenantStatus(ids[i])
            #expect(status.flushFailures == 0, "tenant \(i): \(status.lastFlushError)")
            #expect(status.diskConsistentLsn == acked[i], "tenant \(i): every acknowledged record is in a layer")
            await c.close()
        }
        #expect(await server.stop() == 0)
        server = try await ServerProcess(dir: dir, extraArgs: args, dataDir: data)
        let c = try await server.client()
        for (i, id) in ids.enumerated() {
            #expect(try await c.tenantStatus(id).lastRecordLsn == acked[i])
            #expect(try await c.getPage(tenant: id, key: wkey(UInt32(truncatingIfNeeded: acked[i]))).page == [UInt8](repeating: 0, count: 8192))
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    /// Puts the smallest records in halving batches until one record is
    /// refused for space; returns the last LSN acknowledged.
    private static func fillWithSmallestRecords(_ c: LayerGateClient, tenant: String) async throws -> UInt64 {
        func smallest(_ lsn: UInt64) -> Wire.Record {
            Wire.Record(key: wkey(UInt32(truncatingIfNeeded: lsn)), lsn: lsn, value: .delta(.init(willInit: true, patches: [])))
        }
        var acked: UInt64 = 0
        var size: UInt64 = 8192
        while size >= 1 {
            do {
                acked = try await c.putRecords(tenant: tenant, (acked + 1...acked + size).map(smallest))
            } catch let ClientError.server(code, message) {
                #expect(code == .resourceExhausted, "\(message)")
                size /= 2
            }
        }
        return acked
    }

    /// Issue 9.4: with the descriptor table full of idle connections, WAL
    /// rolls, flushes and compactions answer RESOURCE_EXHAUSTED or work; the
    /// server never stops; once the connections go, everything works.
    @Test func aFullDescriptorTableNeverStopsTheServer() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(
            dir: dir, extraArgs: ["--compaction-period-s", "3600", "--checkpoint-distance-mib", "1"],
            launcher: ["/usr/bin/prlimit", "--nofile=64:64", "--"])
        let c = try await server.client()
        try await c.createTenant(tenantA)
        var lsn: UInt64 = 0
        func put() async throws -> Bool {
            do {
                _ = try await c.putRecords(tenant: tenantA, (1...8 as ClosedRange<UInt64>).map { wimage(UInt32((lsn + $0) % 50), lsn + $0) })
                lsn += 8
                return true
            } catch let ClientError.server(code, message) {
                #expect(code == .resourceExhausted, "\(message)")
                return false
            }
        }
        for _ in 0..<10 { _ = try await put() }
        // Fill the server's descriptor table with idle connections.
        var idle: [RawConnection] = []
        for _ in 0..<80 {
            guard let conn = try? RawConnection(dir.socket) else { break }
            idle.append(conn)
        }
        try await Task.sleep(for: .milliseconds(300))
        let held = idle.count
        #expect(held >= 40, "the descriptor table filled up")
        var refused = 0
        for _ in 0..<40 where !(try await put()) { refused += 1 }  // rolls WAL segments (1 MiB checkpoints)
        do { _ = try await c.compact(tenant: tenantA) } catch let ClientError.server(code, message) {
            #expect(code == .resourceExhausted, "\(message)")
        }
        #expect(server.process.isRunning, "the server stopped: \(server.log)")
        #expect(!server.log.contains("stopping"), "\(server.log)")
        idle.removeAll()
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await put())
        _ = try await c.compact(tenant: tenantA, forceImageLayers: true)
        let status = try await c.tenantStatus(tenantA)
        #expect(status.state == "active" && status.compactionFailures == 0)
        let p = try await c.getPage(tenant: tenantA, key: wkey(UInt32(lsn % 50)))
        #expect(p.page == wpage(UInt64(lsn % 50) << 32 | lsn))
        await c.close()
        #expect(await server.stop() == 0)
        print("descriptor table full: \(held) idle connections held; \(refused) of 40 puts refused meanwhile")
    }
}

extension ServerFaultTests {
    /// More tenants than descriptors at start: the server still starts (its
    /// event loop comes first), tenants it cannot open stay `loading` and say
    /// why, and a start with descriptors to spare loads them all.
    @Test func moreTenantsThanDescriptorsAtStart() async throws {
        let dir = ServerDir()
        var server = try await ServerProcess(dir: dir)
        var c = try await server.client()
        let ids = (1...40).map { String(format: "%032x", $0) }
        for id in ids { try await c.createTenant(id) }
        await c.close()
        #expect(await server.stop() == 0)
        server = try await ServerProcess(dir: dir, launcher: ["/usr/bin/prlimit", "--nofile=48:48", "--"])
        c = try await server.client()
        var loading = 0
        for id in ids {
            do {
                let s = try await c.tenantStatus(id)
                #expect(s.state == "active" || s.state == "loading", "\(s.state)")
                if s.state == "loading" { loading += 1 }
            } catch let ClientError.server(code, message) {
                #expect(code == .tenantUnavailable && message.contains("loading"), "\(message)")
                loading += 1
            }
        }
        #expect(server.process.isRunning)
        #expect(loading > 0, "the limit was low enough that some tenants could not load")
        await c.close()
        #expect(await server.stop() == 0)
        server = try await ServerProcess(dir: dir)
        c = try await server.client()
        for id in ids { #expect(try await c.tenantStatus(id).state == "active") }
        await c.close()
        #expect(await server.stop() == 0)
        print("48 descriptors, 40 tenants: \(loading) stayed loading, the server served")
    }

    /// A descriptor limit of 48 with more clients than it allows and more
    /// layer files than it keeps open: every connection the server accepts is
    /// served without an error (before the plan counted what the server holds
    /// itself, 93 % of such reads were RESOURCE_EXHAUSTED from layer files that
    /// could not be opened, and accepts paused on EMFILE), and those past the
    /// lowered limit are refused at once.
    /// With `idleMetricsPeers`, that many silent TCP connections to the
    /// metrics endpoint are held first: they get the plan's share, not the
    /// descriptors of the socket's connections (before, 30 of them paused
    /// every accept and 11 clients read 11 pages in 5 s).
    @Test(arguments: [0, 30])
    func aLowDescriptorLimitServesEveryConnectionItAccepts(idleMetricsPeers: Int) async throws {
        let dir = ServerDir()
        let args = ["--checkpoint-distance-mib", "1", "--compaction-period-s", "3600", "--page-cache-mib", "1",
                    "--layer-reads", "direct"]
        try await KernelReadTests.writeOneVersion(dir, args: args)
        let layers = try FileManager.default.contentsOfDirectory(atPath: dir.data + "/tenants/" + tenantA).filter { $0.contains("__") }
        #expect(layers.count >= 8, "\(layers)")
        let port = try TCPListener().port  // free now; taken back by the server at once
        let metrics = idleMetricsPeers > 0 ? ["--metrics-listen", "127.0.0.1:\(port)"] : []
        let server = try await ServerProcess(dir: dir, extraArgs: args + metrics + ["--log-level", "debug"],
                                             launcher: ["/usr/bin/prlimit", "--nofile=48:48", "--"])
        let silent = try (0..<idleMetricsPeers).map { _ in try RawTCP(port: port) }
        try await Task.sleep(for: .milliseconds(200))
        defer { _ = silent }
        let allowed = try #require(DescriptorPlanTests.number("max_connections", in: server.log))
        let clients = 16
        #expect(allowed < clients)
        let outcomes = try await withThrowingTaskGroup(of: LowLimitClient.self) { group in
            for seed in 0..<clients {
                group.addTask { try await LowLimitClient.run(server, seed: seed, for: .seconds(2)) }
            }
            return try await group.reduce(into: [LowLimitClient]()) { $0.append($1) }
        }
        let served = outcomes.filter { $0.pages > 0 }
        let errors = served.flatMap(\.errors)
        #expect(errors.isEmpty, "\(errors.count) errors on served connections, first \(errors.prefix(3))")
        #expect(outcomes.allSatisfy { $0.wrong == 0 })
        // The readiness probe's connection may still count when the clients arrive.
        #expect(served.count <= allowed && served.count >= allowed - 1, "\(served.count) served, \(allowed) allowed")
        #expect(!server.log.contains("accept paused"), "\(server.log.suffix(500))")
        print("48 descriptors, \(idleMetricsPeers) idle metrics peers: \(served.count) of \(clients) connections served (\(allowed) allowed), \(served.map(\.pages).reduce(0, +)) pages, \(layers.count) layer files")
        #expect(server.process.isRunning)
        #expect(await server.stop() == 0)
    }

    /// A parent that passes down so many descriptors that the limit leaves
    /// too few to serve one connection of one tenant: the server refuses to
    /// start (exit 2) and says why, where before it started with a table
    /// already full, paused every accept and left its tenant `loading`.
    @Test func tooFewDescriptorsLeftRefusesToStart() async throws {
        let dir = ServerDir()
        let server = try builtExecutable("layergated")
        // Descriptors 16-60 open on /dev/null, then the server at a limit of 64 (prlimit keeps them open).
        let run = try await runToExit("/bin/bash", ["-c", "for i in $(seq 16 60); do eval \"exec $i</dev/null\"; done; "
            + "exec /usr/bin/prlimit --nofile=64:64 -- \(server.path) --socket \(dir.socket) --data-dir \(dir.data)"])
        let text = run.stderr
        #expect(run.status == 2, "\(text)")
        #expect(text.contains("descriptor limit (64)") && text.contains("ulimit -n"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: dir.socket))
    }
}

/// Bytes still free on the filesystem holding `path` (as root sees it).
func freeBytes(_ path: String) -> UInt64 {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { return 0 }
    return UInt64(st.f_bfree) * UInt64(st.f_frsize)
}

/// Writes zeros to `path` until the filesystem is full.
func fill(_ path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let chunk = [UInt8](repeating: 0, count: 1 << 16)
    while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
    var one: UInt8 = 0
    while write(fd, &one, 1) > 0 {}
    fsync(fd)
}

/// One client of `aLowDescriptorLimitServesEveryConnectionItAccepts`: reads
/// random pages for a while; a first read that fails means it was refused.
struct LowLimitClient: Sendable {
    var pages = 0
    var wrong = 0
    var errors: [String] = []

    static func run(_ server: ServerProcess, seed: Int, for duration: Duration) async throws -> LowLimitClient {
        var out = LowLimitClient()
        var rng = SeededRandom(seed: UInt64(seed + 1))
        guard let c = try? await server.client() else { return out }
        let end = ContinuousClock.now + duration
        while ContinuousClock.now < end {
            let key = UInt32.random(in: 0..<KernelReadTests.keys, using: &rng)
            do {
                let got = try await c.getPage(tenant: tenantA, key: wkey(key))
                out.pages += 1
                if got.page != wpage(UInt64(key) << 32 | KernelReadTests.lsn(key, version: 0)) { out.wrong += 1 }
            } catch {
                if out.pages == 0 { break }  // refused: past the connection limit
                out.errors.append("\(error)")
                if out.errors.count > 20 { break }
            }
        }
        await c.close()
        return out
    }
}
