import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Loading a tenant from disk — at open and at reset — and the sweep that
/// makes the directory match the index.
extension Tenant {
    static let walDirectoryName = "wal"

    /// Stops the tenant's work (a running compaction is stopped and waited
    /// for), optionally drops its cached blocks, and loads it again from
    /// index.json and the WAL with a new generation. Readers get
    /// `tenantUnavailable` meanwhile, never old or mixed bytes. A reload that
    /// fails for want of space or descriptors leaves the tenant as it was.
    public func reset(dropCache: Bool) async throws(StorageError) -> ResetResult {
        let reloaded = try await tearDown(on: .resetRequested, failing: .tenantUnavailable(id, state: "resetting")) {
            previous throws(StorageError) -> ResetResult in
            let oldLayers = state.withLock { $0.layers }
            let evictions = oldLayers.layers.compactMap { $0.retire() }
            // An eviction of the old map's layer is removing its file: the new map must not open it first.
            if !evictions.isEmpty { try await BlockingIO.run { self.waitForEvictions(evictions) } }
            // A close (shutdown, detach) that came meanwhile has the tenant: nothing is loaded, or served.
            let stopped = StorageError.tenantUnavailable(id, state: "stopped")
            guard lifecycle != .stopped else { throw stopped }
            let result = try await loadLocked(restoring: previous)
            guard lifecycle != .stopped else { throw stopped }
            if dropCache { cache.dropFiles(Set(oldLayers.layers.compactMap { $0.resident?.fileId })) }
            return result
        }
        guard let reloaded else {
            throw state.withLock { admission($0) } ?? .tenantUnavailable(id, state: lifecycle.name)
        }
        return reloaded
    }

    /// Blocks until every eviction has ended, or the tenant stops (shutdown,
    /// detach), whose close waits for the reset: an unlink held on a failing
    /// disk must not hold the server's exit.
    private func waitForEvictions(_ evictions: [DispatchGroup]) {
        for eviction in evictions {
            while eviction.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
                if lifecycle == .stopped { return }
            }
        }
    }

    /// Loads from disk and installs the result. On failure: a reset whose
    /// reload ran out of space or descriptors goes back to `restoring`; a
    /// first load that did stays `loading` and is retried with back-off;
    /// anything else (damage) makes the tenant broken. Caller holds `maintenance`.
    @discardableResult
    func loadLocked(restoring previous: TenantState? = nil) async throws(StorageError) -> ResetResult {
        let (id, directory, storage, upload) = (self.id, self.directory, self.storage, self.upload)
        // A segment holds a checkpoint distance and the commit that crossed it; far more is damage.
        let maxSegmentBytes = max(1 << 30, 2 * config.checkpointDistanceBytes + (512 << 20))
        let held = state.withLock { $0.directory }
        let reserved = state.withLock { s -> Bool in
            if s.holdsDescriptors { return true }
            s.holdsDescriptors = storage.descriptors.reserveTenant()
            return s.holdsDescriptors
        }
        guard reserved else {
            try await loadFailed(.resourceExhausted(
                "the server keeps the rest of its file descriptors for connections (\(storage.descriptors.tenantsOpen) tenants are open); raise the descriptor limit (ulimit -n) to open more"),
                restoring: previous, held: held)
        }
        let loaded: LoadedTenant
        do throws(StorageError) {
            loaded = try await BlockingIO.run { () throws(StorageError) -> LoadedTenant in
                try Self.load(id: id, directory: directory, held: held, storage: storage, upload: upload,
                              maxSegmentBytes: maxSegmentBytes)
            }
        } catch {
            try await loadFailed(error, restoring: previous, held: held)
        }
        let (froze, lastRecordLsn) = state.withLock { s -> (Bool, Lsn) in
            s.directory = loaded.directory
            s.index = loaded.index
            s.layers = loaded.layers
            s.layerDownload = loaded.download
            s.wal = loaded.wal
            s.frozen = []
            s.open = InMemoryLayer(startLsn: Lsn(loaded.index.diskConsistentLsn).next)
            let replay = loaded.replayed.filter { $0.lsn.rawValue > loaded.index.diskConsistentLsn }
            s.open.insert(replay)
            s.lastRecordLsn = max(Lsn(loaded.index.diskConsistentLsn), replay.last?.lsn ?? .zero)
            s.commits.restart(at: s.lastRecordLsn)
            s.flush.failures = 0
            s.flush.lastError = nil
            s.load.lastError = nil
            s.load.failures = 0
            if let cut = loaded.walTailCut {
                s.load.walTailCuts += 1
                s.load.lastWalTailCut = cut.description
            }
            Self.move(&s, on: .loaded)
            let froze = s.open.approximateBytes >= config.checkpointDistanceBytes
            if froze { Self.freeze(&s) }
            return (froze, s.lastRecordLsn)
        }
        indexChanged()
        refreshUnflushed()
        noteImageSet(loaded.layers)
        lsnWait.reset(to: lastRecordLsn.rawValue)
        if let cut = loaded.walTailCut {
            logger.error("WAL tail cut at load: \(cut). A crash during the last write is the normal cause; if records above that LSN had been acknowledged, they were lost to damage on disk", metadata: [
                "segment": "\(cut.segment)", "offset": "\(cut.offset)", "bytes": "\(cut.bytes)",
            ])
        }
        logger.info("tenant loaded", metadata: [
            "generation": "\(loaded.index.generation)", "layers": "\(loaded.layers.count)",
            "disk_consistent_lsn": "\(Lsn(loaded.index.diskConsistentLsn))", "wal_records": "\(loaded.replayed.count)",
            "files_swept": "\(loaded.filesSwept)",
        ])
        if froze { flushSignal.yield() }
        return ResetResult(generation: loaded.index.generation, filesSwept: loaded.filesSwept)
    }

    private func loadFailed(_ error: StorageError, restoring previous: TenantState?, held: DirectoryHandle?)
        async throws(StorageError) -> Never
    {
        let reason = "\(error)"
        if held == nil {
            // Never loaded: it holds nothing, so it keeps no share of the descriptors.
            let release = state.withLock { s -> Bool in
                defer { s.holdsDescriptors = false }
                return s.holdsDescriptors
            }
            if release { storage.descriptors.releaseTenant() }
        }
        if error.isResourceExhaustion {
            if let previous {
                let kept = state.withLock { s -> LayerMap in
                    _ = Self.move(&s, on: .resetAbandoned(restoring: previous))
                    return s.layers
                }
                // The old map serves on: its layers own their files again (eviction, leftovers).
                // A broken tenant's map serves nothing: it stays as the reset left it.
                if previous == .active { for layer in kept.layers { layer.unretire() } }
                logger.warning("reset could not reload the tenant; it serves on as before", metadata: ["error": "\(reason)"])
                throw .resourceExhausted(
                    "tenant \(id): the reset could not reload it (\(reason)); it serves on as before the reset. Free space or file descriptors, then retry")
            }
            let stillLoading = state.withLock { s -> Bool in
                guard s.lifecycle == .loading else { return false }
                s.load.lastError = reason
                s.load.failures += 1
                return true
            }
            logger.warning("tenant could not load; it stays loading and tries again", metadata: ["error": "\(reason)"])
            if stillLoading { scheduleLoadRetry() }
            throw .resourceExhausted("tenant \(id) could not load: \(reason); it is tried again with back-off")
        }
        // Report what the disk says the generation is, even though the tenant is broken.
        let (id, directory, fs) = (self.id, self.directory, storage.fs)
        let onDisk = try? await BlockingIO.run { () throws(StorageError) -> IndexFile in
            if let held { return try IndexFile.read(directory: held) }
            return try IndexFile.read(directory: try DirectoryHandle(fs: fs, path: directory))
        }
        state.withLock { s in
            Self.move(&s, on: .loadFailed(reason))
            s.load.lastError = reason
            if let onDisk, onDisk.tenantId == id.description { s.index = onDisk }
        }
        logger.error("tenant failed to load", metadata: ["error": "\(reason)"])
        throw .tenantBroken(id, reason: reason)
    }

    private func scheduleLoadRetry() {
        let delay = Self.backoff(config.loadRetryDelay, failures: state.withLock { $0.load.failures },
                                 cap: config.flushMaxBackoff)
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard let self else { return }
            await self.maintenance.lock()
            defer { self.maintenance.unlock() }
            guard self.lifecycle == .loading else { return }
            _ = try? await self.loadLocked()
        }
    }

    /// Reads index.json, sweeps what it does not list, validates what it lists,
    /// replays the WAL, and only then records the new generation: a load that
    /// fails changes nothing but the sweep and a cut torn tail. Blocking.
    static func load(id: TenantId, directory: String, held: DirectoryHandle?, storage: TenantStorage,
                     upload: TenantUpload?, maxSegmentBytes: Int) throws(StorageError) -> LoadedTenant
    {
        let fs = storage.fs
        let dir: DirectoryHandle
        if let held { dir = held } else { dir = try DirectoryHandle(fs: fs, path: directory) }
        var index = try IndexFile.read(directory: dir)
        let indexPath = dir.child(IndexFile.fileName)
        guard index.tenantId == id.description else {
            throw .corruptIndex(file: indexPath, reason: "names tenant \(StorageError.printable(index.tenantId))")
        }
        let generation = try index.nextGeneration(path: indexPath)
        let download = upload.map {
            LayerDownload(tenant: id, directory: dir, upload: $0, generation: generation, cache: storage.cache,
                          openFiles: storage.openFiles, budget: storage.budget, metrics: storage.metrics,
                          failpoints: storage.failpoints)
        }
        var layers = LayerMap()
        for entry in index.layers {
            let path = dir.child(entry.name)
            guard let name = LayerName(parsing: entry.name) else {
                throw .corruptIndex(file: indexPath, reason: "bad layer name")
            }
            let info: FileInfo
            do throws(SystemError) { info = try fs.stat(path) } catch {
                guard error.errno == ENOENT else { throw .io(operation: "stat", path: path, errno: error.errno) }
                // Evicted, or never here since an attach: the first read downloads it.
                guard let download else { throw .corruptLayer(file: path, reason: "listed in index.json but missing") }
                layers.insert(TenantLayer(remote: LayerDescriptor(name: name, size: entry.size), download: download))
                continue
            }
            guard info.size == entry.size else {
                throw .corruptLayer(file: path, reason: "size is \(info.size) bytes, index.json says \(entry.size)")
            }
            layers.insert(TenantLayer(try LayerReader(directory: dir, name: name, tenant: id, cache: storage.cache,
                                                      openFiles: storage.openFiles, expectedSize: entry.size),
                                      download: download))
        }
        let walPath = dir.child(walDirectoryName)
        if !Directory.isDirectory(fs, walPath) {
            try Directory.create(fs, walPath)
            dir.sync()
        }
        let walDir = try DirectoryHandle(fs: fs, path: walPath)
        let replay = try WalReplay.replay(directory: walDir, tenant: id, maxSegmentBytes: maxSegmentBytes)
        if let gone = replay.deletedPredecessorLastLsn, gone.rawValue > index.diskConsistentLsn {
            throw .corruptWal(
                file: replay.oldestSegmentPath ?? walPath,
                reason: "the segment before it, with records up to LSN \(gone), was deleted, but the layers index.json lists reach only LSN \(Lsn(index.diskConsistentLsn)): the records between are gone (was index.json replaced by an older copy?)")
        }
        // Only now, when index.json and the WAL agree with the layers, may
        // the sweep delete what index.json does not list.
        try checkUnlistedAreRedundant(directory: dir, index: index, replayed: replay.records, id: id, storage: storage)
        let swept = try sweep(directory: dir, index: index)
        index.generation = generation
        try index.write(directory: dir, failpoints: storage.failpoints)
        return LoadedTenant(
            directory: dir, index: index, layers: layers, wal: Wal(directory: walDir, tenant: id, replayed: replay, fsyncTime: storage.metrics.walFsync),
            replayed: replay.records, filesSwept: swept, walTailCut: replay.cut, download: download)
    }

    /// A layer file the index does not list is a leftover of a flush or a
    /// compaction that stopped before its commit: whatever it holds above
    /// disk_consistent_lsn is still in the WAL. If not, index.json is older
    /// than the layers (put back from an old copy): the sweep would delete
    /// the only copy of those records, so the load stops here instead.
    static func checkUnlistedAreRedundant(directory: DirectoryHandle, index: IndexFile, replayed: [Record], id: TenantId,
                                          storage: TenantStorage) throws(StorageError) {
        let listed = index.layerNames
        let dcl = Lsn(index.diskConsistentLsn)
        let newer = try Directory.list(storage.fs, directory.path).compactMap { n -> LayerName? in
            guard !listed.contains(n), let name = LayerName(parsing: n), name.lsnEnd > dcl else { return nil }
            return name
        }
        guard !newer.isEmpty else { return }
        var walLsns: [PageKey: Set<UInt64>] = [:]
        for r in replayed where r.lsn > dcl { walLsns[r.key, default: []].insert(r.lsn.rawValue) }
        for name in newer {
            let stale = StorageError.corruptIndex(
                file: directory.child(IndexFile.fileName),
                reason: "layer \(name) holds records up to LSN \(name.lsnEnd) that neither index.json (which ends at LSN \(dcl)) nor the WAL holds: index.json is older than the layers (put back from an old copy?). Put the newer index.json back, or rebuild it with layergate rebuild-index; nothing was deleted")
            let entries: [IndexEntry]
            do throws(StorageError) {
                entries = try LayerReader(directory: directory, name: name, tenant: id, cache: storage.cache,
                                          openFiles: storage.openFiles).allEntries()
            } catch {
                throw stale
            }
            for e in entries where e.lsn > dcl {
                guard walLsns[e.key]?.contains(e.lsn.rawValue) == true else { throw stale }
            }
        }
    }

    /// Deletes temp files (of every kind) and layer files the index does not
    /// list. Returns how many files it removed.
    static func sweep(directory: DirectoryHandle, index: IndexFile) throws(StorageError) -> Int {
        let fs = directory.fs
        let listed = index.layerNames
        var removed = 0
        for name in try Directory.list(fs, directory.path) {
            let doomed = name.hasSuffix("___temp") || (LayerName(parsing: name) != nil && !listed.contains(name))
            // A directory under such a name is not ours to remove (nor to stop on).
            guard doomed, !Directory.isDirectory(fs, directory.child(name)) else { continue }
            try Directory.unlink(fs, directory.child(name))
            removed += 1
        }
        let walDir = directory.child(walDirectoryName)
        if Directory.isDirectory(fs, walDir) {
            for name in try Directory.list(fs, walDir) where name.hasSuffix("___temp") && !Directory.isDirectory(fs, walDir + "/" + name) {
                try Directory.unlink(fs, walDir + "/" + name)
                removed += 1
            }
        }
        if removed > 0 { directory.sync() }
        return removed
    }
}
