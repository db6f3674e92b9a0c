import Foundation
import Testing

@testable import LayerGateStorage

@Suite("Index file and tenant load")
struct IndexTests {
    /// Invariant 4: a failure before the rename leaves the old index whole.
    @Test func invariant4_indexIsReplacedAtomically() async throws {
        let f = try await TenantFixture.make()
        let before = try IndexFile.read(directory: f.tenantDir)
        try f.failpoints.configure("index-before-rename", .return)
        _ = try await f.tenant.put([image(key(1), 5)])
        await #expect(throws: StorageError.failpoint("index-before-rename")) { try await f.tenant.flush() }
        #expect(try IndexFile.read(directory: f.tenantDir) == before)
        // The layer the failed flush published is gone again; no temp either.
        #expect(f.layerFiles().isEmpty)
        try f.failpoints.configure("index-before-rename", .off)
        try await f.tenant.flush()
        let after = try IndexFile.read(directory: f.tenantDir)
        #expect(after.layers.count == 1 && after.diskConsistentLsn == 5)
        await f.manager.shutdown()
    }

    /// Invariant 4: at load, temp files and unlisted layer files are deleted
    /// and counted; listed ones stay.
    @Test func invariant4_loadSweepsTempAndUnlistedFiles() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 5)])
        try await f.tenant.flush()
        let listed = f.layerFiles()
        #expect(listed.count == 1)
        let stray = try writeLayer(f.tenantDir, [image(key(2), 9)], generation: 77)
        _ = FileManager.default.createFile(atPath: f.tenantDir + "/layer-1-1.___temp", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: f.tenantDir + "/index.json.___temp", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: f.tenantDir + "/wal/x.___temp", contents: Data([1]))
        let gen = f.tenant.status().generation
        let result = try await f.tenant.reset(dropCache: true)
        #expect(result.filesSwept == 4)
        #expect(result.generation == gen + 1)
        #expect(f.layerFiles() == listed)
        #expect(!f.layerFiles().contains(stray.fileName))
        #expect(try await f.tenant.getPage(key: key(1), lsn: Lsn(5)).page == page(UInt64(1) << 32 | 5))
        await f.manager.shutdown()
    }

    @Test(arguments: ["missing", "wrong size"])
    func invariant4_aListedFileMissingOrWrongSizeMakesTheTenantBroken(damage: String) async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 5)])
        try await f.tenant.flush()
        let name = f.layerFiles()[0]
        let path = f.tenantDir + "/" + name
        if damage == "missing" {
            unlink(path)
        } else {
            truncate(path, 8192)
        }
        await #expect(throws: StorageError.self) { _ = try await f.tenant.reset(dropCache: true) }
        guard case .broken(let reason) = f.tenant.lifecycle else {
            Issue.record("tenant should be broken")
            return
        }
        #expect(reason.contains(name))
        await #expect(throws: StorageError.tenantBroken(testTenant, reason: reason)) {
            _ = try await f.tenant.getPage(key: key(1), lsn: Lsn(5))
        }
        await f.manager.shutdown()
    }

    @Test func invariant4_generationGrowsAtEveryLoadAndNamesNewLayers() async throws {
        let f = try await TenantFixture.make()
        let g1 = f.tenant.status().generation
        #expect(g1 == 1)
        let (m2, t2) = try await f.reopen()
        #expect(t2.status().generation == g1 + 1)
        _ = try await t2.put([image(key(1), 5)])
        try await t2.flush()
        #expect(t2.status().layers[0].name.hasSuffix("-g" + String(format: "%08x", g1 + 1)))
        let r = try await t2.reset(dropCache: false)
        #expect(r.generation == g1 + 2)
        #expect(try IndexFile.read(directory: t2.path).generation == g1 + 2)
        await m2.shutdown()
    }

    @Test func aGarbledIndexBreaksTheTenantWithoutSweepingAnything() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 5)])
        try await f.tenant.flush()
        let files = f.layerFiles()
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: f.tenantDir + "/index.json"))
        await #expect(throws: StorageError.self) { _ = try await f.tenant.reset(dropCache: true) }
        #expect(f.tenant.status().state.name == "broken")
        #expect(f.layerFiles() == files)
        await f.manager.shutdown()
    }

    @Test func tenantManagerCreatesListsAndRefusesDuplicates() async throws {
        let f = try await TenantFixture.make()
        #expect(f.manager.tenantIds == [testTenant])
        await #expect(throws: StorageError.tenantExists(testTenant)) { _ = try await f.manager.create(testTenant) }
        let other = try TenantId(parsing: "00000000000000000000000000000001")
        #expect(throws: StorageError.tenantNotFound(other)) { _ = try f.manager.tenant(other) }
        // A half-created tenant directory is removed at startup.
        try FileManager.default.createDirectory(atPath: (f.dir.path + "/" + f.manager.directory(of: other)) + ".___temp", withIntermediateDirectories: true)
        let (m2, _) = try await f.reopen()
        #expect(m2.tenantIds == [testTenant])
        #expect(!FileManager.default.fileExists(atPath: (f.dir.path + "/" + f.manager.directory(of: other)) + ".___temp"))
        await m2.shutdown()
    }
}

@Suite("The data directory: one owner, private files")
struct DataDirectoryTests {
    /// Issue 9.5: a second process (here a second manager) on the same data
    /// directory is refused, naming the holder; the lock goes with the holder.
    @Test func aSecondOwnerIsRefusedNamingTheHolder() async throws {
        let dir = TempDir("lock")
        let first = try TenantManager(dataDirectory: dir.path, cache: PageCache(capacity: 8), failpoints: Failpoints(),
                                      logger: quietLogger())
        #expect(throws: StorageError.dataDirectoryLocked(pid: getpid())) {
            _ = try TenantManager(dataDirectory: dir.path, cache: PageCache(capacity: 8), failpoints: Failpoints(),
                                  logger: quietLogger())
        }
        #expect(StorageError.dataDirectoryLocked(pid: getpid()).description.contains("pid \(getpid())"))
        await first.shutdown()
        let second = try TenantManager(dataDirectory: dir.path, cache: PageCache(capacity: 8), failpoints: Failpoints(),
                                       logger: quietLogger())
        await second.shutdown()
    }

    /// Issue 9.10: the data directory and everything in it is the server's
    /// alone (0700 directories, 0600 files), whatever the umask.
    @Test func filesAndDirectoriesAreCreatedPrivate() async throws {
        let dir = TempDir("modes")
        let old = umask(0)
        defer { umask(old) }
        let data = dir.path + "/data"
        let m = try TenantManager(dataDirectory: data, cache: PageCache(capacity: 8), failpoints: Failpoints(),
                                  logger: quietLogger())
        let t = try await m.create(testTenant)
        _ = try await t.put([image(key(1), 1)])
        try await t.flush()
        _ = try await t.put([image(key(1), 2)])
        func mode(_ path: String) -> mode_t {
            var st = stat()
            stat(path, &st)
            return st.st_mode & 0o777
        }
        var checked = 0
        func walk(_ path: String) {
            for name in (try? Directory.list(path)) ?? [] {
                let p = path + "/" + name
                let isDir = Directory.isDirectory(testFS, p)
                #expect(mode(p) == (isDir ? 0o700 : 0o600), "\(p): \(String(mode(p), radix: 8))")
                checked += 1
                if isDir { walk(p) }
            }
        }
        #expect(mode(data) == 0o700)
        walk(data)
        #expect(checked >= 6)
        await m.shutdown()
    }
}

@Suite("Rebuilding a damaged index from the layer files")
struct IndexRebuildTests {
    /// Issue 9.10: a truncated index.json breaks the tenant; rebuild-index
    /// brings it back with every page, leaves out a partial image set and a
    /// damaged file, and compaction works after it (duplicates included).
    @Test func aTruncatedIndexIsRebuiltFromTheLayers() async throws {
        let f = try await TenantFixture.make { $0.targetFileBytes = 30_000 }
        var model = PageModel()
        var lsn = try await ingest(f.tenant, &model, from: 1, count: 60, keys: 12)
        _ = try await f.tenant.compact(forceImageLayers: true)
        lsn = try await ingest(f.tenant, &model, from: lsn, count: 30, keys: 12, seed: 2)
        try await f.tenant.flush()
        let generation = f.tenant.status().generation
        await f.manager.shutdown()
        // A crash leftover: an image set at the newest LSN with one key only.
        let partial = try writeLayer(f.tenantDir, [image(key(3), lsn - 1)], kind: .image, generation: generation)
        // A damaged leftover.
        let junk = try writeLayer(f.tenantDir, [image(key(4), 2), image(key(5), 3)], generation: generation)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: f.tenantDir + "/" + junk.fileName))
        bytes[9000] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: f.tenantDir + "/" + junk.fileName))
        // The index is cut short.
        let indexPath = f.tenantDir + "/index.json"
        let index = try Data(contentsOf: URL(fileURLWithPath: indexPath))
        try index.prefix(index.count / 2).write(to: URL(fileURLWithPath: indexPath))
        var (m, t) = try await f.reopen()
        guard case .broken = t.lifecycle else { Issue.record("a truncated index must break the tenant"); return }
        await m.shutdown()

        let report = try IndexRebuild.run(dataDirectory: f.dir.path, tenant: testTenant, dryRun: false)
        #expect(report.incompleteImages == [partial.fileName])
        #expect(report.damaged.map(\.name) == [junk.fileName])
        #expect(report.imageLayers.count >= 1 && report.deltaLayers.count >= 1)
        #expect(FileManager.default.fileExists(atPath: indexPath + ".damaged"))
        (m, t) = try await f.reopen()
        #expect(t.lifecycle == .active)
        await expectPagesMatch(t, model, lsns: [lsn - 1, lsn - 20])
        _ = try await t.compact(forceImageLayers: true)
        await expectPagesMatch(t, model, lsns: [lsn - 1])
        #expect(t.status().generation > generation)
        await m.shutdown()
    }

    @Test func itRefusesWhileAServerHoldsTheDataDirectory() async throws {
        let f = try await TenantFixture.make()
        #expect(throws: StorageError.dataDirectoryLocked(pid: getpid())) {
            _ = try IndexRebuild.run(dataDirectory: f.dir.path, tenant: testTenant, dryRun: true)
        }
        await f.manager.shutdown()
    }
}
