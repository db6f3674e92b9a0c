// Measurements of the storage engine, release-built, in one process:
//   1. ingest of 8 KiB images including the flush to layer files (MiB/s)
//   2. page cache hit cost (ns per lookup, 1 and 2 threads)
//   3. getPage latency: cached, uncached (cache of 16 slots), and across 200 L0 layers
// Not a test: numbers vary with the machine. Run: make bench  (or BENCH_ARGS="--ingest-mib 1024")
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Dispatch
import LayerGateStorage
import Foundation
import Logging
import Synchronization

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layergate-storage-bench",
        abstract: "Measure the storage engine alone: ingest with flushes, page-cache hits, getPage latency, compaction.",
        discussion: "Not a test: the figures depend on the machine. Data goes to a temp directory under /tmp, removed at the end.")

    enum Part: String, ExpressibleByArgument, CaseIterable { case ingest, cache, read, compaction }

    @Option(help: "MiB of 8 KiB images to ingest (the ingest part).") var ingestMib = 512
    @Option(help: "Concurrent writers during ingest.") var writers = 4
    @Option(help: "Images per put.") var batchPages = 64
    @Option(help: "getPage calls per latency figure (the read part).") var readOps = 200_000
    @Option(help: "MiB of L0 input to compact (the compaction part).") var compactionMib = 1024
    @Option(help: "Run one part only.") var only: Part?

    func validate() throws {
        guard ingestMib > 0, writers > 0, batchPages > 0, readOps > 0, compactionMib > 0 else {
            throw ValidationError("every count must be positive")
        }
        guard ingestMib <= 1 << 20, compactionMib <= 1 << 20 else { throw ValidationError("at most 1 TiB of data") }
        guard writers * batchPages <= ingestMib * 128 else {
            throw ValidationError("--writers × --batch-pages must not exceed the pages ingested (128 per MiB)")
        }
    }
}

let options = Options.parseOrExit()
let ingestMiB = options.ingestMib
let writers = options.writers
let batchPages = options.batchPages
let readOps = options.readOps
func runs(_ part: Options.Part) -> Bool { options.only == nil || options.only == part }

func tempDir() -> String {
    var t = Array("/tmp/layergate-bench-XXXXXX".utf8CString)
    return t.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

func seconds(_ d: Duration) -> Double { d.seconds }

func percentiles(_ samples: inout [Duration]) -> String {
    let sorted = LatencySamples(samples)
    func p(_ q: Double) -> String {
        let ns = sorted.microseconds(q) * 1000
        return ns >= 10_000 ? String(format: "%.1f µs", ns / 1000) : String(format: "%.0f ns", ns)
    }
    let slow = samples.filter { $0 > .milliseconds(1) }.count
    return "p50 \(p(0.5))  p99 \(p(0.99))  p99.9 \(p(0.999))  max \(p(1.0))  (>1 ms: \(slow))"
}

func key(_ n: Int) -> PageKey { PageKey(spcOid: 1663, dbOid: 5, relNumber: UInt32(n / 100_000), fork: 0, block: UInt32(n % 100_000)) }

func imagePage(_ seed: Int) -> [UInt8] {
    var p = [UInt8](repeating: UInt8(truncatingIfNeeded: seed), count: pageSize)
    withUnsafeBytes(of: seed) { p.replaceSubrange(0..<8, with: $0) }
    return p
}

let logger: Logger = {
    var l = Logger(label: "bench")
    l.logLevel = .error
    return l
}()
let tenantId = try TenantId(parsing: "be0c0000000000000000000000000001")

print("layergate-storage-bench: \(ProcessInfo.processInfo.processorCount) cores; data in /tmp")

// 1. Ingest, including the flush of every in-memory layer to L0 files.
if runs(.ingest) {
    let dir = tempDir()
    defer { system("rm -rf \(dir)") }
    let manager = try TenantManager(dataDirectory: dir, cache: PageCache(capacity: 16384), logger: logger)
    let tenant = try await manager.create(tenantId)
    let totalPages = ingestMiB * 128
    let perWriter = totalPages / writers
    let lsns = LsnSource()
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
            group.addTask {
                var done = 0
                while done < perWriter {
                    let n = min(batchPages, perWriter - done)
                    while true {
                        let base = lsns.take(n)
                        let batch = (0..<n).map { i in
                            Record(key: key(w * perWriter + done + i), lsn: Lsn(base + UInt64(i)), value: .image(imagePage(done + i)))
                        }
                        do {
                            _ = try await tenant.put(batch)
                            break
                        } catch StorageError.invalidArgument {
                            continue  // lost the LSN race to another writer: take new LSNs
                        }
                    }
                    done += n
                }
            }
        }
        try await group.waitForAll()
    }
    let ingested = ContinuousClock.now
    try await tenant.flush()
    let end = ContinuousClock.now
    let mib = Double(perWriter * writers) / 128
    let st = tenant.status()
    print(String(format: "ingest: %.0f MiB of 8 KiB images, %d writers × %d pages/put: %.1f MiB/s including flush (%.1f MiB/s before the final flush); %d L0 layers",
                 mib, writers, batchPages, mib / seconds(end - start), mib / seconds(ingested - start), st.layers.count))
    await manager.shutdown()
}

// 2. Page cache hits.
func cacheBench() throws {
    let cache = PageCache(capacity: 16384)
    let hot = 4096
    for b in 0..<hot { cache.withBlock(file: 1, block: UInt64(b), load: { $0.storeBytes(of: b, as: Int.self) }, body: { _ in }) }
    let iterations = 5_000_000
    @Sendable func loop(_ seed: Int, _ n: Int) throws(StorageError) -> Int {
        var x = seed, sum = 0
        for _ in 0..<n {
            x = (x &* 1103515245 &+ 12345) & 0x7fff_ffff
            sum &+= cache.withBlock(file: 1, block: UInt64(x % hot), load: { _ in }, body: { $0.load(as: Int.self) })
        }
        return sum
    }
    var t0 = ContinuousClock.now
    _ = try loop(1, iterations)
    let single = seconds(ContinuousClock.now - t0) / Double(iterations) * 1e9
    t0 = ContinuousClock.now
    DispatchQueue.concurrentPerform(iterations: 2) { i in _ = try? loop(i + 7, iterations) }
    let dual = seconds(ContinuousClock.now - t0) / Double(2 * iterations) * 1e9
    print(String(format: "page cache hit: %.0f ns/lookup on 1 thread; %.0f ns/lookup of wall time with 2 threads (%.2fx throughput)",
                 single, dual, single / dual))
}
if runs(.cache) { try cacheBench() }

// 3. getPage latency.
func readBench(label: String, cacheSlots: Int, layers: Int, keys: Int) async throws {
    let dir = tempDir()
    defer { system("rm -rf \(dir)") }
    let cache = PageCache(capacity: cacheSlots)
    let manager = try TenantManager(dataDirectory: dir, cache: cache, logger: logger)
    let tenant = try await manager.create(tenantId)
    var lsn: UInt64 = 0
    let perLayer = keys / layers
    for l in 0..<layers {
        var batch: [Record] = []
        for k in 0..<perLayer {
            lsn += 1
            batch.append(Record(key: key(l * perLayer + k), lsn: Lsn(lsn), value: .image(imagePage(Int(lsn)))))
        }
        _ = try await tenant.put(batch)
        try await tenant.flush()
    }
    let at = Lsn(lsn)
    for k in 0..<keys { _ = try await tenant.getPage(key: key(k), lsn: at) }  // warm
    let before = cache.stats
    var samples: [Duration] = []
    samples.reserveCapacity(readOps)
    var x = 17
    let clock = ContinuousClock()
    for _ in 0..<readOps {
        x = (x &* 1103515245 &+ 12345) & 0x7fff_ffff
        let k = key(x % keys)
        let t0 = clock.now
        _ = try await tenant.getPage(key: k, lsn: at)
        samples.append(clock.now - t0)
    }
    let after = cache.stats
    let hits = after.hits - before.hits, misses = after.misses - before.misses
    let rate = Double(hits) / Double(max(1, hits + misses)) * 100
    let mean = samples.reduce(Duration.zero, +) / samples.count
    print("getPage \(label): \(percentiles(&samples))  mean \(String(format: "%.0f ns", seconds(mean) * 1e9))  (\(layers) layers, \(keys) keys, block hit rate \(String(format: "%.1f", rate))%)")
    await manager.shutdown()
}

if runs(.read) {
    try await readBench(label: "cached", cacheSlots: 16384, layers: 4, keys: 4000)
    try await readBench(label: "uncached (16-slot cache, OS page cache warm)", cacheSlots: 16, layers: 4, keys: 4000)
    try await readBench(label: "cached, 200 L0 layers", cacheSlots: 16384, layers: 200, keys: 4000)
}

// 4. Compaction of ≥1 GiB of L0 input: merge throughput, peak memory, reads before and after.
func residentMiB(_ field: String) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return -1 }
    return kb / 1024
}

func latestReads(_ tenant: Tenant, keys: Int, ops: Int) async throws -> String {
    var samples: [Duration] = []
    var x = 5
    let clock = ContinuousClock()
    for _ in 0..<ops {
        x = (x &* 1103515245 &+ 12345) & 0x7fff_ffff
        let t0 = clock.now
        _ = try await tenant.getPage(key: key(x % keys), lsn: nil)
        samples.append(clock.now - t0)
    }
    return percentiles(&samples)
}

if runs(.compaction) {
    let dir = tempDir()
    defer { system("rm -rf \(dir)") }
    var config = TenantConfig()
    config.checkpointDistanceBytes = 16 << 20
    config.imageCreationThreshold = .max  // the merge alone first; images are timed separately
    config.targetFileBytes = 128 << 20
    config.compactionPeriod = .seconds(3600)
    let manager = try TenantManager(dataDirectory: dir, config: config, cache: PageCache(capacity: 4096), logger: logger)
    let tenant = try await manager.create(tenantId)
    let keys = 4000
    var lsn: UInt64 = 0
    var round = 0
    let targetBytes = options.compactionMib << 20
    var written = 0
    while written < targetBytes {
        var batch: [Record] = []
        for k in 0..<keys {
            lsn += 1
            if round % 16 == 0 {
                batch.append(Record(key: key(k), lsn: Lsn(lsn), value: .image(imagePage(Int(lsn)))))
                written += pageSize
            } else {
                let patch = Patch(offset: (round * 512) % (pageSize - 512), data: [UInt8](repeating: UInt8(round & 0xFF), count: 512))
                batch.append(Record(key: key(k), lsn: Lsn(lsn), value: .delta(Delta(willInit: false, patches: [patch]))))
                written += 520
            }
            if batch.count == 256 {
                _ = try await tenant.put(batch)
                batch = []
            }
        }
        if !batch.isEmpty { _ = try await tenant.put(batch) }
        round += 1
    }
    try await tenant.flush()
    let before = tenant.status().layers
    let inputBytes = before.reduce(0) { $0 + $1.size }
    let readsBefore = try await latestReads(tenant, keys: keys, ops: 20_000)
    let rssBefore = residentMiB("VmRSS")
    _ = try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)  // resets VmHWM
    var t0 = ContinuousClock.now
    let merged = try await tenant.compact()
    let mergeTime = seconds(ContinuousClock.now - t0)
    let peak = residentMiB("VmHWM")
    t0 = ContinuousClock.now
    let images = try await tenant.compact(forceImageLayers: true)
    let imageTime = seconds(ContinuousClock.now - t0)
    let after = tenant.status().layers
    let readsAfter = try await latestReads(tenant, keys: keys, ops: 20_000)
    print(String(format: "compaction: %d L0 layers, %.0f MiB (%d records in %d rounds) merged into %d L1 layers in %.1f s: %.0f MiB/s of L0 input; RSS %.0f MiB before, peak %.0f MiB during the merge (+%.0f MiB; the 32 MiB page cache was already resident)",
                 before.count, Double(inputBytes) / 1048576, Int(lsn), round, merged.layersCreated, mergeTime,
                 Double(inputBytes) / 1048576 / mergeTime, rssBefore, peak, peak - rssBefore))
    print(String(format: "image layers: %d written (%.0f MiB) in %.1f s", images.layersCreated,
                 Double(images.bytesWritten) / 1048576, imageTime))
    print("getPage at latest, \(before.count) layers (before): \(readsBefore)")
    print("getPage at latest, \(after.count) layers (after):  \(readsAfter)")
    await manager.shutdown()
}

final class LsnSource: Sendable {
    private let next = Mutex<UInt64>(1)
    func take(_ n: Int) -> UInt64 { next.withLock { v in defer { v += UInt64(n) }; return v } }
}
