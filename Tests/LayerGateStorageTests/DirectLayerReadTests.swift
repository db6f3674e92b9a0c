import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

#if canImport(Glibc)
import Glibc
#endif

/// Layer files read past the OS page cache (`directLayerReads`, `--layer-reads direct`).
@Suite("Direct layer reads")
struct DirectLayerReadTests {
    /// Images and deltas over many keys, in layer files: what every test reads back.
    static func history() -> (records: [[Record]], model: PageModel) {
        var model = PageModel()
        var batches: [[Record]] = []
        var lsn: UInt64 = 10
        for round in 0..<6 {
            var batch: [Record] = []
            for k in 0..<40 as Range<UInt32> {
                lsn += 1
                if round % 3 == 0 || k % 5 == 0 {
                    batch.append(image(key(k), lsn))
                } else {
                    batch.append(delta(key(k), lsn, offset: Int(k) * 97 % 8000, bytes: Array(repeating: UInt8(round), count: 100 + Int(k))))
                }
            }
            model.apply(batch)
            batches.append(batch)
        }
        return (batches, model)
    }

    /// Puts the history and flushes each batch to a layer file of its own.
    static func write(_ t: Tenant, _ batches: [[Record]]) async throws {
        for b in batches {
            _ = try await t.put(b)
            try await t.flush()
        }
    }

    /// A disk holding the history in layer files, opened again with a page
    /// cache of `cacheSlots` (cold), and the model its pages must match.
    static func coldFixture(_ disk: SimulatedDisk, directReads: Bool, cacheSlots: Int = 8,
                            _ configure: (inout TenantConfig) -> Void = { _ in }) async throws -> (DiskFixture, PageModel) {
        let (batches, model) = Self.history()
        let config = DiskFixture.config {
            $0.directLayerReads = directReads
            configure(&$0)
        }
        let f = try await DiskFixture.open(disk, config: config)
        try await Self.write(try await f.manager.create(testTenant), batches)
        await f.manager.shutdown()
        return (try await DiskFixture.open(disk, config: config, cacheSlots: cacheSlots), model)
    }

    /// Every key at every LSN, from a cache far smaller than the data: the reads go to the files.
    static func readBack(_ t: Tenant, _ model: PageModel) async throws {
        for lsn in stride(from: 10 as UInt64, through: 10 + 240, by: 7) {
            for k in 0..<40 as Range<UInt32> {
                let want = model.page(key(k), at: Lsn(lsn))
                do {
                    let got = try await t.getPage(key: key(k), lsn: Lsn(lsn))
                    #expect(got.page == want, "key \(k) at \(lsn)")
                } catch StorageError.pageNotFound {
                    #expect(want == nil, "key \(k) at \(lsn) is missing")
                }
            }
        }
    }

    /// A disk that refuses a direct read of unaligned memory, length or offset
    /// (as Linux does): every read of a cold tenant, the summaries and fences
    /// at open included, is aligned, or it would fall back (and count it).
    @Test func everyReadOfALayerIsAligned() async throws {
        let (cold, model) = try await Self.coldFixture(SimulatedDisk(directIO: true), directReads: true)
        try await Self.readBack(try cold.tenant(), model)
        let stats = cold.manager.storage.openFiles.stats
        #expect(stats.direct == stats.open && stats.open > 0, "\(stats)")
        #expect(stats.fallbacks == 0)
        #expect(cold.cache.stats.misses > 500)
        #expect(cold.cache.stats.fromOsCache == 0, "a direct file is never read on the event loop's no-wait path")
        await cold.manager.shutdown()
    }

    /// A direct read the filesystem refuses (EINVAL) is read again through
    /// the OS page cache, and the file reads that way from then on.
    @Test func aRefusedDirectReadFallsBackToThePageCache() async throws {
        let disk = SimulatedDisk(directIO: true)
        let (cold, model) = try await Self.coldFixture(disk, directReads: true)
        let t = try cold.tenant()
        disk.inject(.init([.read], errno: EINVAL, count: 1))
        try await Self.readBack(t, model)
        disk.clearFaults()
        #expect(cold.manager.storage.openFiles.stats.fallbacks == 1)
        await cold.manager.shutdown()
    }

    /// A filesystem that takes O_DIRECT but refuses every 4 KiB-aligned read
    /// (XFS on a 16 KiB-sector device), under many reads at once with fewer
    /// descriptor slots than layers: reads through private descriptors and
    /// through slots fall back side by side. Each file falls back once, and
    /// no read fails (a fallback on one descriptor once marked another, still
    /// direct, as buffered: its next read failed with EINVAL).
    @Test func aFilesystemThatRefusesEveryDirectReadIsReadBufferedUnderLoad() async throws {
        let (cold, model) = try await Self.coldFixture(SimulatedDisk(directIO: true, directAlignment: 16384), directReads: true,
                                                       cacheSlots: 4) { $0.maxOpenLayerFiles = 2 }
        let t = try cold.tenant()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for reader in 0..<16 {
                group.addTask {
                    for i in 0..<60 {
                        let k = UInt32((reader * 7 + i * 13) % 40)
                        let lsn = Lsn(UInt64(51 + (reader * 31 + i * 17) % 200))
                        let got = try await t.getPage(key: key(k), lsn: lsn)
                        #expect(got.page == model.page(key(k), at: lsn), "key \(k) at \(lsn)")
                    }
                }
            }
            try await group.waitForAll()
        }
        let stats = cold.manager.storage.openFiles.stats
        #expect(stats.fallbacks == t.status().layers.count, "\(stats)")
        #expect(stats.direct == 0, "\(stats)")
        await cold.manager.shutdown()
    }

    /// Off (the default), or on a filesystem without direct I/O, nothing reads directly.
    @Test(arguments: [(false, true), (true, false)])
    func withoutDirectReadsTheDescriptorsAreBuffered(asked: Bool, diskTakesIt: Bool) async throws {
        let (cold, model) = try await Self.coldFixture(SimulatedDisk(directIO: diskTakesIt), directReads: asked)
        try await Self.readBack(try cold.tenant(), model)
        let stats = cold.manager.storage.openFiles.stats
        #expect(stats.direct == 0 && stats.open > 0 && stats.fallbacks == 0, "\(stats)")
        await cold.manager.shutdown()
    }

    /// On this machine's filesystem: the layer files' descriptors carry
    /// O_DIRECT, the pages read back right, and a read evicted from the
    /// OS page cache stays out of it.
    @Test func aRealFilesystemReadsLayersDirectly() async throws {
        let dir = TempDir("direct-reads")
        guard WalDirectTests.filesystemTakesDirectIO(dir.path) else {
            print("skipped: the filesystem of \(dir.path) refuses O_DIRECT")
            return
        }
        let (batches, model) = Self.history()
        var config = DiskFixture.config()
        config.directLayerReads = true
        var m = try TenantManager(dataDirectory: dir.path, config: config, cache: PageCache(capacity: 64),
                                  failpoints: Failpoints(), logger: quietLogger())
        try await Self.write(try await m.create(testTenant), batches)
        await m.shutdown()
        let cache = PageCache(capacity: 8)
        m = try TenantManager(dataDirectory: dir.path, config: config, cache: cache, failpoints: Failpoints(),
                              logger: quietLogger())
        try await m.loadAll()
        try await Self.readBack(try m.tenant(testTenant), model)
        let tenants = dir.path + "/tenants"
        let tenantDir = tenants + "/" + (try FileManager.default.contentsOfDirectory(atPath: tenants).first ?? "")
        let layers = try FileManager.default.contentsOfDirectory(atPath: tenantDir).filter { $0.contains("__") }
        let flags = layers.compactMap { WalDirectTests.openFlags(of: tenantDir + "/" + $0) }
        #expect(!flags.isEmpty, "a layer file is open")
        let oDirect = 0o40000
        #expect(flags.allSatisfy { $0 & oDirect != 0 }, "\(flags.map { String($0, radix: 8) })")
        #expect(m.storage.openFiles.stats.fallbacks == 0)
        #expect(cache.stats.fromOsCache == 0)
        await m.shutdown()
    }
}
