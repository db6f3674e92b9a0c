import Foundation
import Glibc
import LayerGateTestSupport
import Synchronization
import Testing

@testable import LayerGateStorage

/// The workload of the sweeps: puts of `CrashWorkload` batches (consecutive
/// LSNs, so any durable record is the workload's own), with flushes,
/// compactions (images every other time), GC and resets in between.
struct SweepWorkload {
    var steps = 48
    var flushEvery = 5
    var compactEvery = 11
    var resetEvery = 23

    static func config() -> TenantConfig {
        DiskFixture.config {
            $0.checkpointDistanceBytes = 40_000  // background flushes too
            $0.targetFileBytes = 30_000          // compaction writes several outputs
            $0.compactionThreshold = 3
            $0.imageCreationThreshold = 2
            $0.gcHorizonLsn = 40                 // GC removes layers
            $0.ingestStallTimeout = .seconds(2)
        }
    }

    struct Outcome {
        var created = false
        /// Every LSN up to this was acknowledged.
        var ackedThrough: UInt64 = 0
        var failures: [StorageError] = []
        var brokenSeen: String?
    }

    /// Runs on `disk` until the steps are done or the disk has crashed.
    /// `onStep` runs before each step (the fault sweep frees space there).
    func run(on disk: SimulatedDisk, onStep: (Int) -> Void = { _ in }) async -> Outcome {
        var out = Outcome()
        guard let f = try? await DiskFixture.open(disk, config: Self.config()) else { return out }
        let tenant: Tenant
        do {
            tenant = try await f.manager.create(CrashWorkload.tenant)
        } catch {
            out.failures.append(error)
            await f.manager.shutdown()
            return out
        }
        out.created = !disk.isCrashed
        var next: UInt64 = 1
        for step in 1...steps where !disk.isCrashed {
            onStep(step)
            let batch = CrashWorkload.batch(startingAt: next)
            do {
                let lsn = try await tenant.put(batch)
                if !disk.isCrashed { out.ackedThrough = lsn.rawValue }
                next = lsn.rawValue + 1
            } catch {
                out.failures.append(error)
                // A put that failed stored nothing: the next one starts at what is durable.
                next = tenant.status().lastRecordLsn.rawValue + 1
            }
            do {
                if step % flushEvery == 0 { try await tenant.flush() }
                if step % compactEvery == 0 { _ = try await tenant.compact(forceImageLayers: step % 2 == 0) }
                if step % resetEvery == 0 { _ = try await tenant.reset(dropCache: step % 2 == 0) }
            } catch {
                out.failures.append(error)
            }
            if case .broken(let reason) = tenant.lifecycle, out.brokenSeen == nil, !disk.isCrashed {
                out.brokenSeen = reason
            }
        }
        await f.manager.shutdown()
        return out
    }
}

/// After a crash or a fault: the tenant is active, holds exactly the index, the
/// WAL and its listed layers, serves every acknowledged record with its bytes,
/// and keeps working (a put, a flush and a compaction that succeed).
func verifyRecovered(_ f: DiskFixture, ackedThrough: UInt64, comment: Comment) async throws {
    let tenant = try f.manager.tenant(CrashWorkload.tenant)
    guard tenant.lifecycle == .active else {
        Issue.record("tenant is \(tenant.lifecycle) (\(tenant.status().lastLoadError ?? "")): \(comment)")
        return
    }
    await tenant.compactionLock.lock()
    await tenant.maintenance.lock()
    do {
        defer {
            tenant.maintenance.unlock()
            tenant.compactionLock.unlock()
        }
        let dir = "tenants/\(CrashWorkload.tenant)"
        let listed = Set(tenant.state.withLock { $0.index.layers.map(\.name) })
        let onDisk = Set(try f.disk.list(dir)).subtracting([IndexFile.fileName, Tenant.walDirectoryName])
        #expect(onDisk == listed, "files besides the listed layers: \(onDisk.symmetricDifference(listed)) (\(comment))")
        #expect(try f.disk.list(dir + "/wal").allSatisfy { $0.hasSuffix(".wal") }, comment)
        #expect(try f.disk.list("tenants").allSatisfy { !$0.hasSuffix("___temp") }, comment)
    }
    let status = tenant.status()
    let last = status.lastRecordLsn.rawValue
    #expect(last >= ackedThrough, "acknowledged through \(ackedThrough), recovered \(last): \(comment)")
    for lsn in stride(from: UInt64(1), through: max(last, ackedThrough), by: 1) {
        let key = CrashWorkload.key(for: lsn)
        if lsn < status.gcCutoffLsn.rawValue { continue }
        switch await readResult(tenant, key, Lsn(lsn)) {
        case .success(let got):
            #expect(got == CrashWorkload.expectedPage(key, at: lsn), "\(key) at \(lsn): \(comment)")
        case .failure(let e):
            Issue.record("\(key) at \(lsn): \(e) (\(comment))")
            return
        }
    }
    // It keeps working, with no reset: a put, a flush, a compaction.
    let more = CrashWorkload.batch(startingAt: last + 1)
    _ = try await tenant.put(more)
    try await tenant.flush()
    _ = try await tenant.compact(forceImageLayers: true)
    #expect(tenant.status().compactionFailures == 0, comment)
}

/// A value tests share across concurrent tasks.
final class Tally: Sendable {
    private let names = Mutex<[String: Int]>([:])
    func add(_ name: String) { names.withLock { $0[name, default: 0] += 1 } }
    var all: [String: Int] { names.withLock { $0 } }
}

/// The crash point of an operation with the file named by role, not name
/// ("write wal", "rename layer"), so that runs can be told apart by what they hit.
func crashPointKind(_ op: String?) -> String {
    guard let op else { return "none" }
    let parts = op.split(separator: " ", maxSplits: 1)
    let path = parts.count > 1 ? String(parts[1]) : ""
    let role: String
    if path.contains("/wal/") { role = "wal" }
    else if path.hasSuffix(".___temp") && !path.contains("/layer-") && !path.contains("index.json") { role = "tenant temp dir" }
    else if path.hasSuffix("index.json.___temp") || path.hasSuffix("index.json") { role = "index" }
    else if path.hasSuffix("___temp") && path.contains("/layer-") { role = "temp layer" }
    else if path.contains("__") { role = "layer" }
    else if path.hasSuffix("/wal") { role = "wal dir" }
    else { role = "dir" }
    return "\(parts[0]) \(role)"
}

/// How densely the sweeps step through crash and fault points: every point
/// with `LAYERGATE_SWEEP_STEP=1` (minutes); every few in `make test`.
let sweepStep = Int(ProcessInfo.processInfo.environment["LAYERGATE_SWEEP_STEP"] ?? "") ?? 3

@Suite("Crash-point sweep: a power loss at every k-th I/O operation", .serialized)
struct CrashPointSweepTests {
    /// `directIO`: files written with O_DIRECT, as on ext4 (the WAL rewrites
    /// its partial last block with each commit), or through the page cache.
    @Test(arguments: [false, true])
    func everyAcknowledgedRecordSurvivesAPowerLossAtEveryPoint(directIO: Bool) async throws {
        let workload = SweepWorkload()
        // A run without a crash says how many mutating operations there are.
        let dry = SimulatedDisk(directIO: directIO)
        let full = await workload.run(on: dry)
        #expect(full.failures.isEmpty, "\(full.failures)")
        let total = dry.mutations
        #expect(total > 200, "the workload does real I/O: \(total) operations")
        let kinds = Tally()
        var runs = 0, torn = 0
        for k in stride(from: 1, through: total + 10, by: sweepStep) {
            let disk = SimulatedDisk(directIO: directIO)
            disk.crash(atOperation: k)
            let run = await workload.run(on: disk)
            kinds.add(crashPointKind(disk.crashedOn))
            let mode: SimulatedDisk.CrashMode = k % 2 == 0 ? .strict : .torn(seed: UInt64(k))
            if k % 2 == 1 { torn += 1 }
            let f = try await DiskFixture.open(disk.crashImage(mode), config: SweepWorkload.config())
            let comment: Comment = "power loss at operation \(k) (\(disk.crashedOn ?? "after the run")), \(mode)"
            if run.created {
                do { try await verifyRecovered(f, ackedThrough: run.ackedThrough, comment: comment) } catch {
                    Issue.record("\(error) (\(comment))")
                }
            } else if let t = try? f.manager.tenant(CrashWorkload.tenant) {
                #expect(t.lifecycle == .active, comment)
            }
            await f.manager.shutdown()
            runs += 1
        }
        print("crash-point sweep (direct I/O \(directIO ? "on" : "off")): \(runs) power losses over \(total) operations (every \(sweepStep)), \(torn) with torn writes; \(kinds.all.count) distinct kinds of crash point: \(kinds.all.sorted { $0.key < $1.key })")
        #expect(kinds.all.count >= 8, "\(kinds.all)")
    }
}

@Suite("Fault sweep: a full disk or no descriptors from the k-th operation", .serialized)
struct FaultSweepTests {
    static let cases: [(String, Set<SimulatedDisk.Operation>, Int32)] = [
        ("ENOSPC", [.write, .create, .mkdir, .rename, .link], ENOSPC),
        ("EMFILE", [.open, .create, .list], EMFILE),
    ]

    /// From the k-th matching operation the disk is full (or descriptors run
    /// out) for a while, then space comes back. Nothing acknowledged is lost,
    /// the tenant is never broken, every failure says RESOURCE_EXHAUSTED,
    /// and afterwards it all works again with no reset.
    @Test(arguments: ["ENOSPC", "EMFILE"], [false, true])
    func nothingAcknowledgedIsLostAndNoTenantBreaks(errno name: String, directIO: Bool) async throws {
        guard let (_, ops, code) = Self.cases.first(where: { $0.0 == name }) else { return }
        let workload = SweepWorkload()
        let dry = SimulatedDisk(directIO: directIO)
        _ = await workload.run(on: dry)
        let total = dry.operationCounts.filter { ops.map(\.rawValue).contains($0.key) }.values.reduce(0, +)
        var runs = 0, faults = 0
        for k in stride(from: 1, through: total, by: sweepStep * 2) {
            let disk = SimulatedDisk(directIO: directIO)
            disk.inject(SimulatedDisk.Fault(ops, errno: code, skip: k - 1, count: 25))
            var freedAt: Int?
            let run = await workload.run(on: disk) { step in
                if freedAt == nil, disk.injectedFaults > 0 { freedAt = step + 3 }
                if let at = freedAt, step >= at { disk.clearFaults() }
            }
            faults += disk.injectedFaults
            let comment: Comment = "\(name) from matching operation \(k)"
            #expect(run.brokenSeen == nil, "the tenant broke: \(run.brokenSeen ?? "") (\(comment))")
            for e in run.failures {
                #expect(e.isResourceExhaustion, "a failure that is not RESOURCE_EXHAUSTED: \(e) (\(comment))")
            }
            disk.clearFaults()
            // The same disk, restarted: everything acknowledged is there.
            let f = try await DiskFixture.open(disk, config: SweepWorkload.config())
            if run.created {
                do { try await verifyRecovered(f, ackedThrough: run.ackedThrough, comment: comment) } catch {
                    Issue.record("\(error) (\(comment))")
                }
            }
            await f.manager.shutdown()
            runs += 1
        }
        print("fault sweep (\(name), direct I/O \(directIO ? "on" : "off")): \(runs) runs over \(total) matching operations, \(faults) faults injected")
        #expect(faults > runs, "faults really fired")
    }
}
