// layergated: the LayerGate page server. Runs with no flags on DESIGN.md's
// defaults; SIGTERM or SIGINT shut it down gracefully.
#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import LayerGateServer
import LayerGateWire
import LayerGateStorage
import Logging
import ServiceLifecycle

@main
struct LayerGated: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layergated",
        abstract: "Serve LayerGate tenants' pages over a Unix domain socket.",
        version: ServerConfig.version)

    @Option(help: "Unix socket path.") var socket = Defaults.socketPath
    @Option(help: "Socket file mode, octal (660 lets a compute-node group connect; admin stays with this uid).")
    var socketMode = "600"
    @Option(help: "Where tenants' layer files, indexes and WALs live.") var dataDir = Defaults.dataDirectory
    // Numbers are parsed .unconditional: "-1" is then the option's value, refused by name in
    // validate(), not taken for a flag ("Missing value for --page-cache-mib").
    @Option(parsing: .unconditional, help: "Page cache size in MiB (8 KiB pages).") var pageCacheMib = 128
    @Option(parsing: .unconditional, help: "In-memory MiB per tenant before a flush to an L0 layer.") var checkpointDistanceMib = 64
    @Option(parsing: .unconditional, help: "L0 layers that trigger an L0→L1 compaction.") var compactionThreshold = 10
    @Option(parsing: .unconditional, help: "Delta layers above the newest image that trigger image layers.") var imageCreationThreshold = 3
    @Option(parsing: .unconditional, help: "Seconds between background compaction runs.") var compactionPeriodS = 20
    @Option(parsing: .unconditional, help: "Compaction splits its output files at about this many MiB.") var compactionTargetMib = 128
    @Option(parsing: .unconditional, help: "GC keeps this many MiB of LSN below last_record_lsn readable.") var gcHorizonMib = 64
    @Option(parsing: .unconditional, help: "Default wait (ms) for a GetPage LSN beyond last_record_lsn.") var waitLsnTimeoutMs = 10_000
    @Option(parsing: .unconditional, help: "Largest frame accepted, MiB.") var maxFrameMib = 16
    @Option(parsing: .unconditional, help: "Free MiB kept on the data directory's filesystem beyond what flushing memory needs; ingest stops before it.")
    var diskReserveMib = 64
    @Option(parsing: .unconditional, help: "Layer-file descriptors kept open at most (reopened on demand).") var maxOpenLayerFiles = 256
    @Option(help: "How layer files are read: direct (the default: O_DIRECT, so the page cache is the one cache of them, and every miss is one read of the disk, made by the event loop) or buffered (through the OS page cache too, read ahead: faster while the OS can hold the data, slower at the tail once it cannot). A filesystem without direct I/O reads buffered.")
    var layerReads = "direct"
    @Option(parsing: .unconditional, help: "Connections at most; one more gets RESOURCE_EXHAUSTED and is closed.") var maxConnections = 1024
    @Option(parsing: .unconditional, help: "Of --max-connections, this many are kept for the server's own uid and root (its ingester, operators): other peers are refused before they take them. At most half of --max-connections.")
    var reservedConnections = 8
    @Option(parsing: .unconditional, help: "A GetPage's wait_ms is capped to this many milliseconds.") var maxWaitLsnMs = 60_000
    @Option(parsing: .unconditional, help: "MiB of large requests being received, decoded or served at once; past it the server stops reading them.")
    var maxInflightMib = 256
    @Option(parsing: .unconditional, help: "A connection with nothing running and nothing arriving for this many seconds is closed.")
    var idleTimeoutS = 600
    @Option(parsing: .unconditional, help: "A frame must arrive whole within this many seconds of its first byte, plus one per MiB of its size; a slower peer is closed.")
    var frameTimeoutS = 10
    @Option(help: "An Ed25519 public key (PEM) that signs tokens: then every request needs one (auth_token).")
    var authPublicKey: String?
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9898; :PORT is every IPv4 interface; port 0 picks one). No authentication: keep it on localhost or a monitoring network. Off by default.")
    var metricsListen: String?
    @Option(help: "Copy every layer and the tenants' remote indexes to this store: s3://BUCKET/PREFIX (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or file:///DIR (an NFS mount, say). Off by default.")
    var remoteStorage: String?
    @Option(help: "The S3 endpoint for s3:// remote storage (default: AWS's for --s3-region), e.g. http://127.0.0.1:5000.")
    var s3Endpoint: String?
    @Option(help: "The region s3:// requests are signed for.") var s3Region = "us-east-1"
    @Option(parsing: .unconditional, help: "With --remote-storage: keep at most this many MiB of layer files on the local disk, over all tenants. Beyond it, the least recently read layers that the store holds are removed here and downloaded again by the read that needs them. Off by default (every layer stays local).")
    var localLayerBudgetMib: Int?
    @Flag(help: "Allow ConfigureFailpoints and LAYERGATE_FAILPOINTS (testing only).") var enableFailpoints = false
    @Option(help: "What serves the socket's connections: epoll (the server's own loop, the default) or nio (SwiftNIO, to compare).")
    var eventLoop = EventLoopKind.epoll.rawValue
    @Option(parsing: .unconditional,  // so that "-1" is this option's (refused) value, not taken for a flag
            help: "With --event-loop epoll: after each event, keep polling the socket for this many microseconds before sleeping, so a request that comes within it is taken without waking a thread (lower latency for a client that sends one request at a time; costs a busy core that long after each event). 0, the default, sleeps at once; at most 10000.")
    var busyPollUs = 0
    @Option(help: "With --event-loop epoll and --layer-reads direct: who reads the disk for a GetPage whose blocks are not cached: uring (the event loop itself, through io_uring; the default where the kernel allows it) or threads (handed to a read thread and back, as buffered layer reads always are).")
    var missReads = "uring"
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"

    func validate() throws {
        // Digits only: UInt16(_:radix:) also takes a sign, and "-0" became mode 000.
        guard socketMode.allSatisfy({ ("0"..."7").contains($0) }),
              UInt16(socketMode, radix: 8).map({ $0 <= 0o777 }) == true else {
            throw ValidationError("--socket-mode must be octal permission bits, like 600 or 660")
        }
        if let metricsListen, MetricsAddress(parsing: metricsListen) == nil {
            throw ValidationError("--metrics-listen must be HOST:PORT, [IPv6]:PORT or :PORT, not '\(metricsListen)'")
        }
        guard (0...10_000).contains(busyPollUs) else { throw ValidationError("--busy-poll-us must be 0...10000, not \(busyPollUs)") }
        guard EventLoopKind(rawValue: eventLoop) != nil else { throw ValidationError("--event-loop must be epoll or nio, not '\(eventLoop)'") }
        guard ["uring", "threads"].contains(missReads) else { throw ValidationError("--miss-reads must be uring or threads, not '\(missReads)'") }
        guard ["direct", "buffered"].contains(layerReads) else { throw ValidationError("--layer-reads must be direct or buffered, not '\(layerReads)'") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        // Each number's range, in one place. The upper bounds: past them, a size in bytes or
        // a duration in nanoseconds made from the value would overflow (the server trapped,
        // or wrapped to a nonsense limit).
        let (mib, seconds, milliseconds, any) = (1 << 30, 365 * 86_400, 365 * 86_400_000, Int.max)
        let ranges: [(String, Int?, ClosedRange<Int>)] = [
            ("--page-cache-mib", pageCacheMib, 1...mib), ("--checkpoint-distance-mib", checkpointDistanceMib, 1...mib),
            ("--compaction-threshold", compactionThreshold, 1...any), ("--image-creation-threshold", imageCreationThreshold, 1...any),
            ("--compaction-period-s", compactionPeriodS, 1...seconds), ("--compaction-target-mib", compactionTargetMib, 1...mib),
            ("--max-frame-mib", maxFrameMib, 1...4095),  // a frame's length is 32 bits
            ("--max-open-layer-files", maxOpenLayerFiles, 1...any), ("--max-connections", maxConnections, 1...any),
            ("--reserved-connections", reservedConnections, 0...any),
            ("--max-inflight-mib", maxInflightMib, 1...mib),
            ("--idle-timeout-s", idleTimeoutS, 1...seconds), ("--frame-timeout-s", frameTimeoutS, 1...seconds),
            ("--gc-horizon-mib", gcHorizonMib, 0...mib), ("--disk-reserve-mib", diskReserveMib, 0...mib),
            ("--local-layer-budget-mib", localLayerBudgetMib, 0...mib),
            ("--wait-lsn-timeout-ms", waitLsnTimeoutMs, 0...milliseconds), ("--max-wait-lsn-ms", maxWaitLsnMs, 0...milliseconds),
        ]
        for (name, value, range) in ranges {
            guard let v = value, !range.contains(v) else { continue }
            if v > range.upperBound { throw ValidationError("\(name) must be at most \(range.upperBound), not \(v)") }
            throw ValidationError(range.lowerBound == 0 ? "\(name) must not be negative, not \(v)" : "\(name) must be at least \(range.lowerBound)")
        }
        if localLayerBudgetMib != nil, remoteStorage == nil {
            throw ValidationError("--local-layer-budget-mib needs --remote-storage: a layer is removed here only when the store holds it")
        }
        // The page cache is allocated whole at start: more than the machine has would abort there.
        let memoryMib = (Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))) >> 20
        if memoryMib > 0, pageCacheMib > memoryMib {
            throw ValidationError("--page-cache-mib \(pageCacheMib) is more than this machine's \(memoryMib) MiB of memory")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "layergated")
        var config = ServerConfig()
        config.socketPath = socket
        config.socketMode = UInt16(socketMode, radix: 8) ?? 0o600
        config.dataDirectory = dataDir
        config.pageCacheMiB = pageCacheMib
        config.maxFrameBytes = maxFrameMib << 20
        config.enableFailpoints = enableFailpoints
        config.metricsListen = metricsListen.flatMap(MetricsAddress.init(parsing:))
        config.eventLoop = EventLoopKind(rawValue: eventLoop) ?? .epoll
        config.busyPoll = .microseconds(busyPollUs)
        config.kernelReads = missReads == "uring"
        config.remoteStorage = remoteStorage
        config.s3Endpoint = s3Endpoint
        config.s3Region = s3Region
        config.tenant.checkpointDistanceBytes = checkpointDistanceMib << 20
        config.tenant.localLayerBudgetBytes = localLayerBudgetMib.map { $0 << 20 }
        config.tenant.compactionThreshold = compactionThreshold
        config.tenant.imageCreationThreshold = imageCreationThreshold
        config.tenant.compactionPeriod = .seconds(compactionPeriodS)
        config.tenant.targetFileBytes = compactionTargetMib << 20
        config.tenant.gcHorizonLsn = UInt64(gcHorizonMib) << 20
        config.tenant.waitLsnTimeout = .milliseconds(waitLsnTimeoutMs)
        config.tenant.diskReserveBytes = diskReserveMib << 20
        config.tenant.directLayerReads = layerReads == "direct"
        config.limits.maxConnections = maxConnections
        config.limits.reservedConnections = reservedConnections
        config.tenant.maxOpenLayerFiles = maxOpenLayerFiles
        config.limits.maxWaitLsn = .milliseconds(maxWaitLsnMs)
        config.limits.maxInflightBytes = maxInflightMib << 20
        config.limits.idleTimeout = .seconds(idleTimeoutS)
        config.limits.frameTimeout = .seconds(frameTimeoutS)
        if let authPublicKey {
            do { config.authPublicKeyPEM = try String(contentsOfFile: authPublicKey, encoding: .utf8) } catch {
                logger.critical("--auth-public-key \(authPublicKey): \(error)")
                throw ExitCode(2)
            }
        }
        let limit = raiseDescriptorLimit(logger: logger)
        let held = heldDescriptors()
        let plan = DescriptorPlan(limit: limit, held: held, config: config)
        logger.debug("descriptor plan", metadata: [
            "descriptor_limit": "\(limit)", "held": "\(held)", "own": "\(plan.own)", "spare": "\(plan.spare)",
            "max_open_layer_files": "\(plan.openLayerFiles)", "loose_layer_files": "\(plan.looseLayerFiles)",
            "tenant_descriptors": "\(plan.tenantDescriptors)", "max_connections": "\(plan.connections)",
            "remote_calls": "\(plan.remoteCalls)", "metrics_connections": "\(plan.metricsConnections)",
        ])
        if plan.isTooSmall {
            logger.critical("""
                the descriptor limit (\(limit)) leaves \(plan.usable) descriptors beside the \(held) open at start, \
                the \(plan.own) the server keeps for itself and a spare of \(plan.spare): it needs at least \
                \(DescriptorPlan.minimumUsable) to serve one connection of one tenant. Raise the limit (ulimit -n) or \
                close the descriptors its parent passed down
                """)
            throw ExitCode(2)
        }
        if plan.lowers(config) {
            logger.warning("limits lowered to fit the descriptor limit (raise it with ulimit -n)", metadata: [
                "descriptor_limit": "\(limit)", "held_at_start": "\(held)",
                "max_open_layer_files": "\(plan.openLayerFiles)", "max_connections": "\(plan.connections)",
                "max_open_tenants": "\(max(1, plan.tenantDescriptors / DescriptorBudget.perTenant))",
            ])
        }
        plan.apply(to: &config)
        if config.busyPoll > .zero && config.eventLoop != .epoll {
            logger.warning("--busy-poll-us has no effect with --event-loop \(eventLoop): only the epoll loop polls")
        }
        let server = Server(config: config, logger: logger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        do {
            try await group.run()
        } catch let e as ServerError {
            logger.critical("\(e)")
            throw ExitCode(2)
        } catch let e as StorageError {
            logger.critical("\(e)")
            throw ExitCode(2)
        } catch let e as RemoteError {
            logger.critical("\(e)")
            throw ExitCode(2)
        }
    }
}

/// Descriptors open now (inherited ones included), from /proc/self/fd; 3
/// (the standard streams) where that cannot be read.
func heldDescriptors() -> Int {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return 3 }
    return max(0, names.count - 1)  // not the descriptor the listing read through
}

/// Connections, layer files and WAL segments all need descriptors: take the
/// hard limit, not the 1024 a shell usually hands out. Returns the limit in force.
func raiseDescriptorLimit(logger: Logger) -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    guard limit.rlim_cur < limit.rlim_max else { return Int(clamping: limit.rlim_cur) }
    let wanted = min(limit.rlim_max, 1 << 20)
    var raised = limit
    raised.rlim_cur = wanted
    guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 else { return Int(clamping: limit.rlim_cur) }
    logger.debug("raised the descriptor limit", metadata: ["from": "\(limit.rlim_cur)", "to": "\(wanted)"])
    return Int(clamping: wanted)
}
