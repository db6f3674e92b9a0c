#if canImport(Glibc)
import Glibc
#endif

/// Loading a tenant from disk — at open and at reset — and the sweep that
/// makes the directory match the index.
extension Tenant {
    static let walDirectoryName = "wal"

    /// Stops the tenant's work, optionally drops its cached blocks, and loads
    /// it again from index.json and the WAL with a new generation. Readers get
    /// `tenantUnavailable` meanwhile, never old or mixed bytes.
    public func reset(dropCache: Bool) async throws(StorageError) -> ResetResult {
        await maintenance.lock()
        defer { maintenance.unlock() }
        let waiters = try state.withLock { s throws(StorageError) -> [LsnWaiter] in
            guard let next = TenantLifecycle.next(s.lifecycle, on: .resetRequested) else {
                throw TenantLifecycle.admission(s.lifecycle, tenant: id) ?? .tenantUnavailable(id, state: s.lifecycle.name)
            }
            s.lifecycle = next
            s.compactionCancelled = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters {
            w.timer?.cancel()
            w.continuation.resume(returning: .failure(.tenantUnavailable(id, state: "resetting")))
        }
        await drainCommits()
        let (oldLayers, oldWal) = state.withLock { s in (s.layers, s.wal) }
        oldWal?.close()
        if dropCache { cache.dropFiles(Set(oldLayers.layers.map(\.fileId))) }
        return try await loadLocked()
    }

    /// Loads from disk and installs the result, or marks the tenant broken.
    /// Caller holds `maintenance`.
    @discardableResult
    func loadLocked() async throws(StorageError) -> ResetResult {
        let (id, directory, cache) = (self.id, self.directory, self.cache)
        let failpoints = self.failpoints
        let loaded: LoadedTenant
        do throws(StorageError) {
            loaded = try await BlockingIO.run { () throws(StorageError) -> LoadedTenant in
                try Self.load(id: id, directory: directory, cache: cache, failpoints: failpoints)
            }
        } catch {
            let reason = "\(error)"
            logger.error("tenant failed to load", metadata: ["error": "\(reason)"])
            state.withLock { s in s.lifecycle = TenantLifecycle.next(s.lifecycle, on: .loadFailed(reason)) ?? s.lifecycle }
            throw .tenantBroken(id, reason: reason)
        }
        let froze = state.withLock { s -> Bool in
            s.index = loaded.index
            s.layers = loaded.layers
            s.wal = loaded.wal
            s.frozen = []
            s.open = InMemoryLayer(startLsn: Lsn(loaded.index.diskConsistentLsn).next)
            let replay = loaded.replayed.filter { $0.lsn.rawValue > loaded.index.diskConsistentLsn }
            s.open.insert(replay)
            s.lastRecordLsn = max(Lsn(loaded.index.diskConsistentLsn), replay.last?.lsn ?? .zero)
            s.reservedLsn = s.lastRecordLsn
            s.pending = []
            s.lastFlushError = nil
            s.compactionCancelled = false
            s.lifecycle = TenantLifecycle.next(s.lifecycle, on: .loaded) ?? s.lifecycle
            let froze = s.open.approximateBytes >= config.checkpointDistanceBytes
            if froze { Self.freeze(&s) }
            return froze
        }
        logger.info("tenant loaded", metadata: [
            "generation": "\(loaded.index.generation)", "layers": "\(loaded.layers.count)",
            "disk_consistent_lsn": "\(Lsn(loaded.index.diskConsistentLsn))", "wal_records": "\(loaded.replayed.count)",
            "files_swept": "\(loaded.filesSwept)", "torn_wal_bytes": "\(loaded.tornWalBytes)",
        ])
        if froze { flushSignal.yield() }
        return ResetResult(generation: loaded.index.generation, filesSwept: loaded.filesSwept)
    }

    /// Reads index.json, sweeps what it does not list, validates what it lists,
    /// records the new generation, and replays the WAL. Blocking.
    static func load(id: TenantId, directory: String, cache: PageCache, failpoints: Failpoints) throws(StorageError)
        -> LoadedTenant
    {
        var index = try IndexFile.read(directory: directory)
        guard index.tenantId == id.description else {
            throw .corruptIndex(file: directory + "/" + IndexFile.fileName, reason: "names tenant \(index.tenantId)")
        }
        let swept = try sweep(directory: directory, index: index)
        var layers = LayerMap()
        for entry in index.layers {
            guard let name = LayerName(parsing: entry.name) else { preconditionFailure("index names were validated") }
            let path = directory + "/" + entry.name
            guard let size = Directory.fileSize(path) else {
                throw .corruptLayer(file: path, reason: "listed in index.json but missing")
            }
            guard size == entry.size else {
                throw .corruptLayer(file: path, reason: "size is \(size) bytes, index.json says \(entry.size)")
            }
            layers.insert(try LayerReader(directory: directory, name: name, tenant: id, cache: cache, expectedSize: entry.size))
        }
        index.generation += 1
        try index.write(directory: directory, failpoints: failpoints)
        let walDir = directory + "/" + walDirectoryName
        try Directory.create(walDir)
        let replay = try Wal.replay(directory: walDir)
        return LoadedTenant(
            index: index, layers: layers, wal: Wal(directory: walDir, existing: replay.segments),
            replayed: replay.records, filesSwept: swept, tornWalBytes: replay.tornBytesCut)
    }

    /// Deletes temp files (of every kind) and layer files the index does not
    /// list. Returns how many files it removed.
    static func sweep(directory: String, index: IndexFile) throws(StorageError) -> Int {
        let listed = index.layerNames
        var removed = 0
        for name in try Directory.list(directory) {
            let doomed = name.hasSuffix("___temp") || (LayerName(parsing: name) != nil && !listed.contains(name))
            guard doomed else { continue }
            try Directory.unlink(directory + "/" + name)
            removed += 1
        }
        let walDir = directory + "/" + walDirectoryName
        if Directory.isDirectory(walDir) {
            for name in try Directory.list(walDir) where name.hasSuffix("___temp") {
                try Directory.unlink(walDir + "/" + name)
                removed += 1
            }
        }
        if removed > 0 { Directory.fsync(directory) }
        return removed
    }
}
