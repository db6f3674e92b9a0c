/// Moving a tenant between servers through remote storage: attach serves it
/// from the store's newest index of a generation below the one given;
/// detach uploads all of it and then removes it here.
extension TenantManager {
    /// Writes index.json from the chosen remote index and opens the tenant,
    /// which then writes with `generation`. It serves at once: each layer is
    /// downloaded by the first read (or compaction) that needs it. All or
    /// nothing, as `create`: a failed attach leaves no directory behind.
    /// Returns the tenant and how many layers it has.
    public func attach(_ id: TenantId, generation: UInt32) async throws(StorageError) -> (tenant: Tenant, layers: Int) {
        guard let remote = storage.remote else {
            throw .invalidArgument("attaching tenant \(id) needs a server started with --remote-storage")
        }
        guard generation >= 1 else { throw .invalidArgument("tenant \(id): attach needs a generation of 1 or more") }
        let failpoints = self.failpoints
        let (tenant, layers) = try await install(id, doing: "attach") { fs, temp throws(StorageError) -> Int in
            let (base, keys) = try Self.newestRemoteIndex(of: id, atMost: generation, in: remote)
            // Each listed object must be there now, not only when a read needs it.
            let present = Set(keys)
            for layer in base.layers where !present.contains(RemoteIndex.layerKey(id, layer.name)) {
                throw .remote(id, .corruptIndex(key: RemoteIndex.key(id, generation: base.generation),
                                                reason: "it lists \(layer.name), which the store does not hold"))
            }
            var index = IndexFile(tenant: id)
            // The load that opens it records the next generation: the one asked for.
            index.generation = generation - 1
            index.diskConsistentLsn = base.diskConsistentLsn
            index.gcCutoffLsn = base.gcCutoffLsn
            index.layers = base.layers.map { IndexFile.Layer(name: $0.name, size: $0.size, level: $0.level ?? 0) }
            // The index attached from is the newest this server may find without being fenced.
            try RemoteClaim(claimed: base.generation).write(fs: fs, directory: temp)
            try index.write(directory: try DirectoryHandle(fs: fs, path: temp), failpoints: failpoints)
            return base.layers.count
        }
        logger.info("attached tenant from remote storage", metadata: [
            "tenant": "\(id)", "generation": "\(generation)", "layers": "\(layers)",
        ])
        return (tenant, layers)
    }

    /// The newest remote index of `id` whose generation is below `generation`
    /// (an index of that very generation would be another server's).
    private static func newestRemoteIndex(of id: TenantId, atMost generation: UInt32, in remote: any RemoteStore)
        throws(StorageError) -> (index: RemoteIndex, keys: [String])
    {
        do throws(RemoteError) {
            let keys = try remote.list(prefix: RemoteIndex.prefix(id))
            let generations = keys.compactMap(RemoteIndex.generation(ofKey:))
            guard !generations.contains(generation) else {
                throw .badConfiguration("tenant \(id): generation \(generation) has a remote index already; attach with a higher one")
            }
            guard let base = generations.filter({ $0 < generation }).max() else {
                throw .badConfiguration("tenant \(id): the store has no remote index below generation \(generation)")
            }
            return (try RemoteIndex.fetch(id, generation: base, from: remote).index, keys)
        } catch {
            throw .remote(id, error)
        }
    }

    /// Flushes the tenant, waits until its remote copy holds everything, then
    /// closes it and removes its directory. Returns the remote-consistent LSN.
    /// If the uploads do not catch up in time, or ingest went on meanwhile,
    /// the tenant stays (reopened) and the error says why.
    public func detach(_ id: TenantId) async throws(StorageError) -> Lsn {
        guard storage.remote != nil else {
            throw .invalidArgument("detaching tenant \(id) needs a server started with --remote-storage")
        }
        let tenant = try self.tenant(id)
        try await tenant.flush()
        guard await tenant.waitUntilUploaded(timeout: config.detachTimeout) else {
            let remote = tenant.status().remote
            let why = remote.flatMap { r in
                r.fencedByGeneration.map { "another server writes the remote copy with generation \($0)" }
                    ?? r.lastUploadFailure?.detail  // whose fault it is, the answer below says once
            } ?? "uploads are slow"
            let reason = "the remote copy did not catch up in \(config.detachTimeout): \(why); the tenant stays"
            let key = RemoteIndex.prefix(id)
            // Uploads held back by this server's own shortage or disk are that, not the store's failure.
            switch remote?.lastUploadFailure {
            case .exhausted?: throw .remote(id, .exhausted(operation: "detach", key: key, reason: reason))
            case .localIO?: throw .remote(id, .localIO(operation: "detach", key: key, reason: reason))
            default: throw .remote(id, .unavailable(operation: "detach", key: key, reason: reason))
            }
        }
        await tenant.close()
        let status = tenant.status()
        // Records put after the flush are in the WAL only: keep the tenant.
        guard let remoteLsn = status.remote?.remoteConsistentLsn, remoteLsn >= status.lastRecordLsn else {
            let reopened = await Tenant.open(id: id, directory: directory(of: id), config: config, storage: storage, logger: logger)
            tenants.withLock { $0[id] = reopened }
            throw .tenantUnavailable(id, state: "still ingesting (records arrived during the detach); stop ingest and detach again")
        }
        let (fs, final, tenantsDirectory) = (storage.fs, directory(of: id), self.tenantsDirectory)
        let temp = final + ".___temp"
        do throws(StorageError) {
            // Out of the tenants' names first: a directory still named for the tenant would load again at the next start.
            try await BlockingIO.run { () throws(StorageError) in
                Directory.removeTree(fs, temp)  // left by a crashed create, attach or detach; never a tenant
                try Self.renameDirectory(fs, final, temp, tenant: id)
                tenantsDirectory.sync()
            }
        } catch {
            let reopened = await Tenant.open(id: id, directory: final, config: config, storage: storage, logger: logger)
            tenants.withLock { $0[id] = reopened }
            throw error
        }
        tenants.withLock { _ = $0.removeValue(forKey: id) }
        _ = try? await BlockingIO.run { () throws(StorageError) in
            // A crash before this ends leaves `<id>.___temp`, which the next load removes.
            Directory.removeTree(fs, temp)
            tenantsDirectory.sync()
        }
        logger.info("detached tenant", metadata: ["tenant": "\(id)", "remote_consistent_lsn": "\(remoteLsn)"])
        return remoteLsn
    }
}
