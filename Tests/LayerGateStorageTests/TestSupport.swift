import Foundation
import Logging
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// Scratch space for a test (LayerGateTestSupport).
typealias TempDir = TemporaryDirectory

let testTenant = try! TenantId(parsing: "0123456789abcdef0123456789ABCDEF")

func key(_ block: UInt32, rel: UInt32 = 1000) -> PageKey {
    PageKey(spcOid: 1663, dbOid: 5, relNumber: rel, fork: 0, block: block)
}

/// A page whose bytes say which (key, lsn) made it.
func page(_ seed: UInt64) -> [UInt8] { seededPage(seed) }

func image(_ k: PageKey, _ lsn: UInt64, seed: UInt64? = nil) -> Record {
    Record(key: k, lsn: Lsn(lsn), value: .image(page(seed ?? (UInt64(k.block) << 32 | lsn))))
}

func delta(_ k: PageKey, _ lsn: UInt64, offset: Int, bytes: [UInt8], willInit: Bool = false) -> Record {
    Record(key: k, lsn: Lsn(lsn), value: .delta(Delta(willInit: willInit, patches: [Patch(offset: offset, data: bytes)])))
}

/// The plain in-memory model the engine must agree with.
struct PageModel {
    var history: [PageKey: [(Lsn, RecordValue)]] = [:]

    mutating func apply(_ records: [Record]) {
        for r in records { history[r.key, default: []].append((r.lsn, r.value)) }
    }

    func page(_ key: PageKey, at lsn: Lsn) -> [UInt8]? {
        guard let versions = history[key] else { return nil }
        let visible = versions.filter { $0.0 <= lsn }
        guard !visible.isEmpty else { return nil }
        // From the newest base, or from a zero page when there is none.
        let start = visible.lastIndex { $0.1.isBase } ?? 0
        var out = [UInt8](repeating: 0, count: pageSize)
        for (_, v) in visible[start...] {
            switch v {
            case .image(let b): out = b
            case .delta(let d):
                if d.willInit { out = [UInt8](repeating: 0, count: pageSize) }
                for p in d.patches { out.replaceSubrange(p.offset..<p.offset + p.data.count, with: p.data) }
            }
        }
        return out
    }
}

func quietLogger() -> Logger {
    var l = Logger(label: "test")
    l.logLevel = .critical
    return l
}

/// A tenant in a fresh directory, with its own failpoint registry (tests run in parallel).
struct TenantFixture {
    let dir: TempDir
    let manager: TenantManager
    let tenant: Tenant
    let failpoints: Failpoints
    let cache: PageCache

    static func make(
        checkpointBytes: Int = 64 << 20, cacheSlots: Int = 1024, waitTimeout: Duration = .seconds(5),
        label: String = "tenant", remote: (any RemoteStore)? = nil, configure: (inout TenantConfig) -> Void = { _ in }
    ) async throws -> TenantFixture {
        let dir = TempDir(label)
        let failpoints = Failpoints()
        try failpoints.enable(environment: nil)
        var config = TenantConfig()
        config.checkpointDistanceBytes = checkpointBytes
        config.waitLsnTimeout = waitTimeout
        config.flushRetryDelay = .milliseconds(20)
        config.compactionPeriod = .seconds(3600)  // tests compact explicitly unless they say otherwise
        configure(&config)
        let cache = PageCache(capacity: cacheSlots)
        let manager = try TenantManager(dataDirectory: dir.path, config: config, cache: cache, failpoints: failpoints,
                                        remote: remote, logger: quietLogger())
        let tenant = try await manager.create(testTenant)
        return TenantFixture(dir: dir, manager: manager, tenant: tenant, failpoints: failpoints, cache: cache)
    }

    var tenantDir: String { tenant.path }

    /// Closes the tenant and opens it again from disk, as a restart would.
    func reopen(remote: (any RemoteStore)? = nil) async throws -> (TenantManager, Tenant) {
        await manager.shutdown()
        let m = try TenantManager(dataDirectory: dir.path, config: manager.config, cache: cache, failpoints: failpoints,
                                  remote: remote ?? manager.storage.remote, logger: quietLogger())
        try await m.loadAll()
        return (m, try m.tenant(testTenant))
    }

    /// Layer and temp files in the tenant directory.
    func layerFiles() -> [String] {
        dir.files("tenants/\(testTenant)").filter { $0 != IndexFile.fileName && $0 != "wal" && $0 != RemoteClaim.fileName }
    }
}

func readResult(_ t: Tenant, _ k: PageKey, _ lsn: Lsn) async -> Result<[UInt8], StorageError> {
    do {
        return .success(try await t.getPage(key: k, lsn: lsn).page)
    } catch {
        return .failure(error)
    }
}

// MARK: the real filesystem by absolute path, for tests that look at files directly

let testFS = RealFileSystem()
let testOpenFiles = OpenFileTable(fs: testFS, capacity: 64)

extension DirectoryHandle {
    static func at(_ path: String) -> DirectoryHandle { try! DirectoryHandle(fs: testFS, path: path) }
}

extension LayerReader {
    convenience init(directory: String, name: LayerName, tenant: TenantId, cache: PageCache, expectedSize: Int? = nil)
        throws(StorageError)
    {
        try self.init(directory: .at(directory), name: name, tenant: tenant, cache: cache, openFiles: testOpenFiles,
                      expectedSize: expectedSize)
    }
}

extension LayerMap {
    /// A local layer without remote storage, as the tenant inserts one.
    mutating func insert(_ reader: LayerReader) { insert(TenantLayer(reader, download: nil)) }
}

extension IndexFile {
    static func read(directory: String) throws(StorageError) -> IndexFile { try read(directory: .at(directory)) }
}

extension Directory {
    static func list(_ path: String) throws(StorageError) -> [String] { try list(testFS, path) }
    static func removeTree(_ path: String) { removeTree(testFS, path) }
    static func fileSize(_ path: String) -> Int? { fileSize(testFS, path) }
}

extension RawFile {
    static func openReadOnly(_ path: String) throws(StorageError) -> RawFile { try open(testFS, path, .readOnly) }
}

extension Tenant {
    /// The tenant's directory by absolute path (the engine only knows it relative to the data directory).
    var path: String { storage.root + "/" + directory }
}

// MARK: tenants on a simulated disk

/// A tenant manager on a `SimulatedDisk`: power loss, torn writes and faults on cue.
struct DiskFixture {
    let disk: SimulatedDisk
    let manager: TenantManager
    let failpoints: Failpoints
    let cache: PageCache
    let config: TenantConfig

    static func config(_ configure: (inout TenantConfig) -> Void = { _ in }) -> TenantConfig {
        var config = TenantConfig()
        config.checkpointDistanceBytes = 64 << 20
        config.waitLsnTimeout = .seconds(5)
        config.flushRetryDelay = .milliseconds(20)
        config.loadRetryDelay = .milliseconds(20)
        config.compactionPeriod = .seconds(3600)
        config.diskReserveBytes = 0
        configure(&config)
        return config
    }

    /// Opens `disk` (a new one by default) and loads what it holds.
    static func open(_ disk: SimulatedDisk = SimulatedDisk(), config: TenantConfig = DiskFixture.config(),
                     cacheSlots: Int = 256) async throws -> DiskFixture {
        let failpoints = Failpoints()
        try failpoints.enable(environment: nil)
        let cache = PageCache(capacity: cacheSlots)
        let manager = try TenantManager(fileSystem: disk, config: config, cache: cache, failpoints: failpoints,
                                        logger: quietLogger())
        try await manager.loadAll()
        return DiskFixture(disk: disk, manager: manager, failpoints: failpoints, cache: cache, config: config)
    }

    func tenant(_ id: TenantId = testTenant) throws -> Tenant { try manager.tenant(id) }

    /// The disk after a power loss now, opened as a restarted server would.
    func afterPowerLoss(_ mode: SimulatedDisk.CrashMode = .strict) async throws -> DiskFixture {
        let image = disk.crashImage(mode)
        disk.crashNow()
        await manager.shutdown()
        return try await DiskFixture.open(image, config: config)
    }

    /// A clean restart: close, then open the same disk.
    func restarted() async throws -> DiskFixture {
        await manager.shutdown()
        return try await DiskFixture.open(disk, config: config)
    }

    /// Entries of a tenant directory on the simulated disk.
    func files(_ sub: String = "") -> [String] {
        let path = "tenants/\(testTenant)" + (sub.isEmpty ? "" : "/" + sub)
        return ((try? disk.list(path)) ?? []).sorted()
    }

    func readFile(_ path: String) throws -> [UInt8] { try disk.contents(of: path) }

    func writeFile(_ path: String, _ bytes: [UInt8]) throws { try disk.replaceFile(path, with: bytes) }
}

extension SimulatedDisk {
    /// Replaces the file's whole contents with `bytes`, synced (damage made by hand).
    func replaceFile(_ path: String, with bytes: [UInt8]) throws {
        let fd = try open(path, .createTruncate)
        defer { close(fd) }
        _ = try bytes.withUnsafeBytes { try pwrite(fd, from: $0, at: 0) }
        try fsync(fd)
    }
}

/// `tenant.put` as a Result, for tests that expect failures.
func putResult(_ t: Tenant, _ records: [Record]) async -> Result<Lsn, StorageError> {
    do { return .success(try await t.put(records)) } catch { return .failure(error) }
}

// MARK: WAL segments

/// A WAL segment of `testTenant`, by name, on a `DiskFixture`'s disk.
func walPath(_ name: String) -> String { "tenants/\(testTenant)/wal/\(name)" }

extension DiskFixture {
    /// The names of `testTenant`'s WAL segments, oldest first.
    func walSegments() -> [String] { files("wal").filter { $0.hasSuffix(".wal") } }
}

/// The frames of a format-2 segment that verify, one after another from its
/// start, each with the zeros that align it to 8 bytes.
func walFrames(_ bytes: [UInt8]) -> [Range<Int>] {
    var out: [Range<Int>] = []
    bytes.withUnsafeBytes { b in
        var pos = 0
        while let frame = WalFormat.frame(in: b, at: pos) {
            out.append(pos..<frame.end)
            pos = frame.end
        }
    }
    return out
}

extension DiskFixture {
    /// A tenant of four L0 layers of 20 images each, the server shut down:
    /// the fixture, and the oldest L0's name and path, for a test to damage.
    static func fourL0Layers() async throws -> (fixture: DiskFixture, victim: String, path: String) {
        let f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        for lsn in 1...4 as ClosedRange<UInt64> {
            _ = try await t.put((0..<20 as Range<UInt32>).map { image(key($0), lsn * 100 + UInt64($0)) })
            try await t.flush()
        }
        let victim = t.status().layers.last!.name  // the oldest L0
        await f.manager.shutdown()
        return (f, victim, "tenants/\(testTenant)/\(victim)")
    }
}
