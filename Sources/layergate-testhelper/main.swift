// Drives a tenant the way a crash test needs: ingests `CrashWorkload`
// batches, flushes now and then, and after `--arm-after` puts sets a
// failpoint (usually `exit`) so the process dies at that point. Each
// acknowledged put is appended to the ack file with write(2) before the next
// starts, so a test that kills this process knows what was acknowledged.
//
// With --compact-every K it flushes and then compacts every K puts (forcing
// image layers every other time), and arms the failpoint just before the
// first compaction after M puts, so the process dies inside compaction.
//
//   layergate-testhelper --data DIR --acks FILE --puts N [--checkpoint-bytes B]
//                        [--flush-every K] [--compact-every K] [--target-bytes B]
//                        [--arm-after M --failpoint NAME=ACTION]
#if canImport(Glibc)
import Glibc
#endif
import LayerGateStorage
import LayerGateTestSupport
import Logging

func argument(_ name: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    return args[i + 1]
}

func fail(_ message: String) -> Never {
    var m = "layergate-testhelper: \(message)\n"
    m.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(2)
}

guard let data = argument("--data"), let acks = argument("--acks"), let puts = argument("--puts").flatMap(Int.init) else {
    fail("usage: --data DIR --acks FILE --puts N [--checkpoint-bytes B] [--flush-every K] [--arm-after M --failpoint NAME=ACTION]")
}
let flushEvery = argument("--flush-every").flatMap(Int.init) ?? 0
let armAfter = argument("--arm-after").flatMap(Int.init) ?? 0
let failpoint = argument("--failpoint")
let compactEvery = argument("--compact-every").flatMap(Int.init) ?? 0

func arm() throws {
    guard let failpoint else { return }
    let parts = failpoint.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2 else { fail("--failpoint takes NAME=ACTION") }
    try Failpoints.shared.configure(parts[0], Failpoints.Action(parsing: parts[1]))
}

do {
    try Failpoints.shared.enable()
    var config = TenantConfig()
    config.checkpointDistanceBytes = argument("--checkpoint-bytes").flatMap(Int.init) ?? (64 << 20)
    config.targetFileBytes = argument("--target-bytes").flatMap(Int.init) ?? config.targetFileBytes
    config.compactionPeriod = .seconds(3600)
    var logger = Logger(label: "testhelper")
    logger.logLevel = .error
    let manager = try TenantManager(dataDirectory: data, config: config, cache: PageCache(capacity: 256), logger: logger)
    try await manager.loadAll()
    let tenant = manager.tenantIds.contains(CrashWorkload.tenant)
        ? try manager.tenant(CrashWorkload.tenant) : try await manager.create(CrashWorkload.tenant)
    let ackFd = open(acks, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    guard ackFd >= 0 else { fail("cannot open \(acks)") }
    var next = tenant.status().lastRecordLsn.rawValue + 1
    var armed = false
    for i in 0..<puts {
        if i == armAfter && compactEvery == 0 {
            try arm()
            armed = true
        }
        let batch = CrashWorkload.batch(startingAt: next)
        let acked = try await tenant.put(batch)
        var line = "\(acked.rawValue)\n"
        line.withUTF8 { _ = write(ackFd, $0.baseAddress, $0.count) }
        next = batch.last!.lsn.rawValue + 1
        if flushEvery > 0 && (i + 1) % flushEvery == 0 { try await tenant.flush() }
        if compactEvery > 0 && (i + 1) % compactEvery == 0 {
            try await tenant.flush()
            if !armed && i + 1 >= armAfter {
                try arm()
                armed = true
            }
            _ = try await tenant.compact(forceImageLayers: (i + 1) / compactEvery % 2 == 0)
        }
    }
    await manager.shutdown()
} catch {
    fail("\(error)")
}
