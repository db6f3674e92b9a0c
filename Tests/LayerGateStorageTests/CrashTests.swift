import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// The crash helper built next to this test binary.
func helperExecutable() throws -> URL {
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [dir, dir.deletingLastPathComponent()] {
        let url = candidate.appendingPathComponent("layergate-testhelper")
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    throw HelperMissing(searched: dir.path)
}

struct HelperMissing: Error, CustomStringConvertible {
    var searched: String
    var description: String { "layergate-testhelper not found near \(searched): run `swift build` first" }
}

struct CrashRun {
    var exitStatus: Int32
    var killed: Bool
    var acked: [UInt64]
    var stderr: String
}

/// Runs the helper; kills it with SIGKILL once `killAfterAcks` puts are acknowledged (if set).
func runHelper(dataDir: String, puts: Int, checkpointBytes: Int = 60_000, flushEvery: Int = 0, armAfter: Int = 0,
               failpoint: String? = nil, killAfterAcks: Int? = nil, compactEvery: Int = 0,
               targetBytes: Int = 40_000) async throws -> CrashRun {
    let acks = dataDir + "/acks.txt"
    let p = Process()
    p.executableURL = try helperExecutable()
    var args = ["--data", dataDir, "--acks", acks, "--puts", "\(puts)", "--checkpoint-bytes", "\(checkpointBytes)",
                "--flush-every", "\(flushEvery)", "--arm-after", "\(armAfter)",
                "--compact-every", "\(compactEvery)", "--target-bytes", "\(targetBytes)"]
    if let failpoint { args += ["--failpoint", failpoint] }
    p.arguments = args
    let errPipe = Pipe()
    p.standardError = errPipe
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    var killed = false
    let deadline = ContinuousClock.now + .seconds(120)
    while p.isRunning {
        if let k = killAfterAcks, ackedLsns(acks).count >= k {
            kill(p.processIdentifier, SIGKILL)
            killed = true
            break
        }
        if ContinuousClock.now > deadline {
            kill(p.processIdentifier, SIGKILL)
            Issue.record("helper did not finish in time")
            break
        }
        try await Task.sleep(for: .milliseconds(5))
    }
    p.waitUntilExit()
    let err = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return CrashRun(exitStatus: p.terminationStatus, killed: killed, acked: ackedLsns(acks), stderr: err)
}

func ackedLsns(_ path: String) -> [UInt64] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    // A line is complete once its newline is written; a torn last line is not an ack.
    return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().compactMap { UInt64($0) }
}

/// Opens the data dir in-process and checks every acknowledged record, and
/// that nothing but listed layers (no temp, no unlisted file) remains.
func verifyAfterCrash(dataDir: String, acked: [UInt64], comment: Comment) async throws {
    let fp = Failpoints()
    var config = TenantConfig()
    config.checkpointDistanceBytes = 60_000
    let manager = try TenantManager(dataDirectory: dataDir, config: config, cache: PageCache(capacity: 128),
                                    failpoints: fp, logger: quietLogger())
    try await manager.loadAll()
    do {
        try await verifyLoaded(manager: manager, acked: acked, comment: comment)
    } catch {
        await manager.shutdown()
        throw error
    }
    await manager.shutdown()
}

private func verifyLoaded(manager: TenantManager, acked: [UInt64], comment: Comment) async throws {
    let tenant = try manager.tenant(CrashWorkload.tenant)
    #expect(tenant.lifecycle == .active, comment)
    // Right after the load the directory holds exactly the index, the WAL and
    // the listed layers (checked under the maintenance lock: a background flush
    // of the replayed WAL may already be writing its temp file).
    await tenant.maintenance.lock()
    do {
        defer { tenant.maintenance.unlock() }
        let dir = tenant.path
        let listed = try IndexFile.read(directory: dir).layerNames
        let onDisk = Set(try Directory.list(dir)).subtracting([IndexFile.fileName, "wal"])
        #expect(onDisk == listed, comment)
        #expect(try Directory.list(dir + "/wal").allSatisfy { $0.hasSuffix(".wal") }, comment)
    }
    let last = acked.max() ?? 0
    #expect(tenant.status().lastRecordLsn.rawValue >= last, comment)
    // Every acknowledged record, byte for byte: the page it made, read at its LSN.
    var pages: [PageKey: [UInt8]] = [:]
    for lsn in stride(from: UInt64(1), through: last, by: 1) {
        let r = CrashWorkload.record(lsn)
        switch r.value {
        case .image(let b): pages[r.key] = b
        case .delta(let d):
            var p = pages[r.key] ?? [UInt8](repeating: 0, count: pageSize)
            for patch in d.patches { p.replaceSubrange(patch.offset..<patch.offset + patch.data.count, with: patch.data) }
            pages[r.key] = p
        }
        switch await readResult(tenant, r.key, Lsn(lsn)) {
        case .success(let got): #expect(got == pages[r.key], "\(r.key) at \(lsn): \(comment)")
        case .failure(let e): Issue.record("\(r.key) at \(lsn): \(e) (\(comment))")
        }
    }
    // And it keeps working: more puts, a flush, a compaction that succeeds.
    let more = CrashWorkload.batch(startingAt: tenant.status().lastRecordLsn.rawValue + 1)
    _ = try await tenant.put(more)
    try await tenant.flush()
    #expect(tenant.status().inMemoryRecords == 0, comment)
    _ = try await tenant.compact(forceImageLayers: true)
    #expect(tenant.status().compactionFailures == 0, comment)
    #expect(tenant.status().layers.filter(\.isImage).count >= 1, comment)
}

@Suite("Crash tests (subprocess)", .serialized)
struct CrashTests {
    static let crashPoints = [
        "layer-writer-put-value", "layer-writer-before-finish", "layer-writer-before-publish",
        "after-layer-publish-before-index", "flush-before-index", "index-before-rename", "flush-after-index-before-wal-truncate", "wal-before-fsync",
    ]

    /// A failpoint `exit` at each named point during ingest and flushes, then a
    /// reopen: every acknowledged record reads back exactly; no stray files.
    @Test(arguments: crashPoints)
    func failpointExitThenReopen(point: String) async throws {
        let dir = TempDir("crash")
        let run = try await runHelper(dataDir: dir.path, puts: 400, flushEvery: 50, armAfter: 120,
                                      failpoint: "\(point)=exit")
        #expect(run.exitStatus == 99, "helper should die at \(point): \(run.stderr)")
        #expect(run.acked.count >= 120)
        try await verifyAfterCrash(dataDir: dir.path, acked: run.acked, comment: "crash at \(point)")
    }

    /// SIGKILL at arbitrary moments during a stream of puts with background flushes.
    @Test(arguments: [40, 150, 333] as [Int])
    func sigkillDuringIngestThenReopen(afterAcks: Int) async throws {
        let dir = TempDir("kill")
        // Far more puts than the kill needs: on a fast disk 5,000 finished between two of the parent's polls.
        let run = try await runHelper(dataDir: dir.path, puts: 100_000, checkpointBytes: 30_000, killAfterAcks: afterAcks)
        #expect(run.killed, "helper finished before the kill: \(run.stderr)")
        #expect(run.acked.count >= afterAcks)
        try await verifyAfterCrash(dataDir: dir.path, acked: run.acked, comment: "SIGKILL after \(afterAcks) acks")
    }

    /// A failpoint `exit` at each compaction failpoint, then a reopen: pages
    /// equal the model, no temp or unlisted file remains, the next compaction succeeds.
    @Test(arguments: ["layer-writer-put-value", "layer-writer-before-finish", "compaction-after-first-output",
                      "after-layer-publish-before-index", "index-before-rename"])
    func crashDuringCompactionThenReopen(point: String) async throws {
        let dir = TempDir("compact-crash")
        let run = try await runHelper(dataDir: dir.path, puts: 400, checkpointBytes: 50_000, armAfter: 150,
                                      failpoint: "\(point)=exit", compactEvery: 60)
        #expect(run.exitStatus == 99, "helper should die at \(point): \(run.stderr)")
        #expect(run.acked.count >= 150)
        try await verifyAfterCrash(dataDir: dir.path, acked: run.acked, comment: "crash in compaction at \(point)")
    }

    /// Two crashes in a row, the second while the first's leftovers are being recovered.
    @Test func crashTwiceThenReopen() async throws {
        let dir = TempDir("twice")
        let first = try await runHelper(dataDir: dir.path, puts: 300, flushEvery: 40, armAfter: 100,
                                        failpoint: "after-layer-publish-before-index=exit")
        let second = try await runHelper(dataDir: dir.path, puts: 300, flushEvery: 40, armAfter: 60,
                                         failpoint: "flush-before-index=exit")
        #expect(first.exitStatus == 99 && second.exitStatus == 99, "\(first.stderr) \(second.stderr)")
        try await verifyAfterCrash(dataDir: dir.path, acked: first.acked + second.acked, comment: "two crashes")
    }
}
