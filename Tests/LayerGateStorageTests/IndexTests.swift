import Foundation
import LayerGateTestSupport
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
        // Below disk_consistent_lsn: what a compaction leaves when it dies
        // between publishing and the index commit.
        let stray = try writeLayer(f.tenantDir, [image(key(2), 3)], generation: 77)
        _ = FileManager.default.createFile(atPath: f.tenantDir + "/layer-1-1.___temp", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: f.tenantDir + "/index.json.___temp", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: f.tenantDir + "/wal/x.___temp", contents: Data([1]))
        // A directory is never the server's leftover: it stays.
        try FileManager.default.createDirectory(atPath: f.tenantDir + "/operator-notes.___temp", withIntermediateDirectories: false)
        let gen = f.tenant.status().generation
        let result = try await f.tenant.reset(dropCache: true)
        #expect(result.filesSwept == 4)
        #expect(FileManager.default.fileExists(atPath: f.tenantDir + "/operator-notes.___temp"))
        #expect(result.generation == gen + 1)
        #expect(f.layerFiles().filter { $0 != "operator-notes.___temp" } == listed)
        #expect(!f.layerFiles().contains(stray.fileName))
        #expect(try await f.tenant.getPage(key: key(1), lsn: Lsn(5)).page == page(UInt64(1) << 32 | 5))
        await f.manager.shutdown()
    }

    /// An unlisted layer above disk_consistent_lsn whose records the WAL does
    /// not hold means index.json is older than the layers (put back from a
    /// copy). Sweeping it would delete acknowledged records: the tenant is
    /// broken instead, and nothing is deleted.
    @Test func anIndexOlderThanItsLayersBreaksTheTenantAndDeletesNothing() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 5)])
        try await f.tenant.flush()
        let old = try Data(contentsOf: URL(fileURLWithPath: f.tenantDir + "/index.json"))
        _ = try await f.tenant.put([image(key(2), 9)])
        try await f.tenant.flush()
        let files = f.layerFiles()
        #expect(files.count == 2)
        try old.write(to: URL(fileURLWithPath: f.tenantDir + "/index.json"))
        await #expect(throws: StorageError.self) { _ = try await f.tenant.reset(dropCache: true) }
        guard case .broken(let reason) = f.tenant.lifecycle else {
            Issue.record("tenant should be broken")
            return
        }
        #expect(reason.contains("older than the layers") && reason.contains("nothing was deleted"), "\(reason)")
        #expect(f.layerFiles() == files)
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
        // A refusal comes after a second of retries (a lock of this process's own may be a spawning
        // child's copy for a moment): on a thread of its own, never one of Swift's few pool threads.
        let path = dir.path
        let secondOwner = { @Sendable in
            await onThreadResult {
                _ = try TenantManager(dataDirectory: path, cache: PageCache(capacity: 8), failpoints: Failpoints(),
                                      logger: quietLogger())
            }
        }
        let refused = await secondOwner()
        #expect(throws: StorageError.dataDirectoryLocked(pid: getpid())) { try refused.get() }
        #expect(StorageError.dataDirectoryLocked(pid: getpid()).description.contains("pid \(getpid())"))
        // Deleting the lock file does not let a second owner in: the directory is locked too.
        unlink(dir.path + "/" + DataDirectoryLock.fileName)
        let unnamed = await secondOwner()
        #expect(throws: StorageError.dataDirectoryLocked(pid: 0)) { try unnamed.get() }
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

    /// A damaged layer in the middle of the history, or the newest one with
    /// the WAL after it, leaves LSNs that nothing holds: rebuild-index refuses
    /// and writes nothing, rather than an index that serves wrong pages. With
    /// every layer intact, history from LSN 1 stays readable.
    @Test(arguments: ["middle", "newest", "none"])
    func itRefusesToServeAHole(damaged which: String) async throws {
        let f = try await TenantFixture.make()
        var model = PageModel()
        var lsn: UInt64 = 1
        for _ in 0..<4 { lsn = try await ingest(f.tenant, &model, from: lsn, count: 10, keys: 5, flushEvery: 10) }
        _ = try await f.tenant.put([image(key(1), lsn)])  // in the WAL only
        let layers = f.tenant.status().layers.sorted { $0.lsnStart < $1.lsnStart }
        #expect(layers.count == 4)
        await f.manager.shutdown()
        if which != "none" {
            let victim = which == "middle" ? layers[1].name : layers[3].name
            let path = f.tenantDir + "/" + victim
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[8200] ^= 0xFF
            try bytes.write(to: URL(fileURLWithPath: path))
        }
        let indexPath = f.tenantDir + "/index.json"
        try Data("{".utf8).write(to: URL(fileURLWithPath: indexPath))
        let r = try IndexRebuild.run(dataDirectory: f.dir.path, tenant: testTenant, dryRun: false)
        if which == "none" {
            #expect(r.refusal == nil && r.written && r.gcCutoffLsn == .zero, "\(r.refusal ?? "")")
            let (m, t) = try await f.reopen()
            #expect(t.lifecycle == .active)
            await expectPagesMatch(t, model, lsns: [1, 15, lsn - 1], keys: 5)
            await m.shutdown()
        } else {
            #expect(r.refusal != nil && !r.written, "\(which): \(r)")
            #expect(try String(contentsOfFile: indexPath, encoding: .utf8) == "{", "nothing written")
        }
    }

    /// A damaged delta is left out only when valid layers hold every record
    /// its own index lists: here another delta holds keys 1–2 of the same
    /// LSNs, so dropping the damaged copy loses nothing, unless it also held
    /// key 3.
    @Test(arguments: [false, true])
    func aDamagedLayerIsDroppedOnlyWhenOthersHoldItsRecords(holdsMore: Bool) async throws {
        let f = try await TenantFixture.make()
        let generation = f.tenant.status().generation
        await f.manager.shutdown()
        let records = [image(key(1), 1), image(key(2), 2)]
        _ = try writeLayer(f.tenantDir, records, generation: generation)
        let damaged = try writeLayer(f.tenantDir, records + (holdsMore ? [image(key(3), 2)] : []), generation: generation + 1)
        let path = f.tenantDir + "/" + damaged.fileName
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[8200] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        try Data("{".utf8).write(to: URL(fileURLWithPath: f.tenantDir + "/index.json"))
        let r = try IndexRebuild.run(dataDirectory: f.dir.path, tenant: testTenant, dryRun: false)
        #expect(r.damaged.map(\.name) == [damaged.fileName])
        if holdsMore {
            #expect(r.refusal?.contains(damaged.fileName) == true && !r.written, "\(r)")
        } else {
            #expect(r.refusal == nil && r.written, "\(r.refusal ?? "")")
            let (m, t) = try await f.reopen()
            #expect(try await t.getPage(key: key(2), lsn: Lsn(2)).page == page(UInt64(2) << 32 | 2))
            await m.shutdown()
        }
    }

    @Test func itRefusesWhileAServerHoldsTheDataDirectory() async throws {
        let f = try await TenantFixture.make()
        // The refusal comes after a second of retries: on a thread of its own.
        let path = f.dir.path
        let refused = await onThreadResult { _ = try IndexRebuild.run(dataDirectory: path, tenant: testTenant, dryRun: true) }
        #expect(throws: StorageError.dataDirectoryLocked(pid: getpid())) { try refused.get() }
        await f.manager.shutdown()
    }
}

@Suite("index.json: checksummed, consistent with its layers")
struct IndexChecksumTests {
    /// One changed digit (disk_consistent_lsn 512 → 532) is damage, not a new truth.
    @Test func aChangedDigitIsCaughtByTheChecksum() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 512)])
        try await f.tenant.flush()
        await f.manager.shutdown()
        let path = f.tenantDir + "/index.json"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("\"disk_consistent_lsn\" : 512"))
        try text.replacingOccurrences(of: "\"disk_consistent_lsn\" : 512", with: "\"disk_consistent_lsn\" : 532")
            .write(toFile: path, atomically: false, encoding: .utf8)
        let (m, t) = try await f.reopen()
        guard case .broken(let reason) = t.lifecycle else { Issue.record("a changed index.json was accepted"); return }
        #expect(reason.contains("checksum mismatch"), "\(reason)")
        await m.shutdown()
    }

    /// Format 1 (layergate 0.1, no checksum) still loads; its disk-consistent
    /// LSN must still be where its layers end.
    @Test func formatOneLoadsButMustBeConsistent() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 40)])
        try await f.tenant.flush()
        await f.manager.shutdown()
        let path = f.tenantDir + "/index.json"
        var index = try IndexFile.read(directory: f.tenantDir)
        index.formatVersion = 1
        index.checksum = nil
        try JSONEncoder().encode(index).write(to: URL(fileURLWithPath: path))
        var (m, t) = try await f.reopen()
        #expect(t.lifecycle == .active)
        #expect(try await t.getPage(key: key(1), lsn: Lsn(40)).page == page(UInt64(1) << 32 | 40))
        await m.shutdown()
        index = try IndexFile.read(directory: f.tenantDir)
        index.formatVersion = 1
        index.checksum = nil
        index.diskConsistentLsn = 10_000
        try JSONEncoder().encode(index).write(to: URL(fileURLWithPath: path))
        (m, t) = try await f.reopen()
        guard case .broken(let reason) = t.lifecycle else { Issue.record("an inconsistent index was accepted"); return }
        #expect(reason.contains("not where the listed layers end"), "\(reason)")
        await m.shutdown()
    }

    /// A FIFO or a sparse terabyte in place of index.json or a WAL segment is
    /// an error at once, not a hang or a terabyte allocation.
    /// A layer listed twice, once in a second spelling (uppercase hex), is a
    /// damaged index: the tenant is broken and nothing traps or is swept.
    @Test func aLayerListedUnderASecondSpellingIsDamage() async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 40)])
        try await f.tenant.flush()
        await f.manager.shutdown()
        var index = try IndexFile.read(directory: f.tenantDir)
        var twin = index.layers[0]
        twin.name = twin.name.uppercased().replacingOccurrences(of: "__", with: "__").replacingOccurrences(of: "-G", with: "-g")
        #expect(twin.name != index.layers[0].name)
        index.layers.append(twin)
        index.checksum = index.computedChecksum()
        try JSONEncoder().encode(index).write(to: URL(fileURLWithPath: f.tenantDir + "/index.json"))
        let files = f.layerFiles()
        let (m, t) = try await f.reopen()
        guard case .broken = t.lifecycle else { Issue.record("a twice-listed layer was accepted"); return }
        #expect(f.layerFiles() == files)
        await m.shutdown()
    }

    @Test(arguments: ["fifo index", "huge index", "huge wal"])
    func specialAndHugeFilesAreErrors(what: String) async throws {
        let f = try await TenantFixture.make()
        _ = try await f.tenant.put([image(key(1), 5)])
        await f.manager.shutdown()
        let index = f.tenantDir + "/index.json"
        let segment = f.tenantDir + "/wal/" + f.dir.files("tenants/\(testTenant)/wal")[0]
        switch what {
        case "fifo index":
            unlink(index)
            #expect(mkfifo(index, 0o600) == 0)
        case "huge index":
            #expect(truncate(index, 1 << 40) == 0)
        default:
            #expect(truncate(segment, 1 << 40) == 0)
        }
        let start = ContinuousClock.now
        let (m, t) = try await f.reopen()
        guard case .broken(let reason) = t.lifecycle else { Issue.record("\(what): \(t.lifecycle)"); return }
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(reason.contains(what.hasSuffix("wal") ? "WAL" : "index"), "\(reason)")
        await m.shutdown()
    }
}
