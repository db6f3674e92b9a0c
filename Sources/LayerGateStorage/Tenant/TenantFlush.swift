#if canImport(Glibc)
import Glibc
#endif

/// Freezing the in-memory layer and writing it to an L0 delta layer:
/// gated publish, then the index names it (disk_consistent_lsn moves), then
/// readers see it, then the WAL below it is deleted.
extension Tenant {
    /// Flushes everything ingested so far to layer files and waits for it.
    public func flush() async throws(StorageError) {
        await maintenance.lock()
        defer { maintenance.unlock() }
        try state.withLock { s throws(StorageError) in
            if let e = TenantLifecycle.admission(s.lifecycle, tenant: id) { throw e }
            Self.freeze(&s)
        }
        try await flushFrozenLocked()
    }

    func startBackgroundFlush() {
        let signals = flushSignalsStream
        Task { [weak self] in
            for await _ in signals {
                guard let self else { return }
                await self.backgroundFlush()
            }
        }
    }

    private func backgroundFlush() async {
        await maintenance.lock()
        defer { maintenance.unlock() }
        guard state.withLock({ $0.lifecycle == .active && !$0.frozen.isEmpty }) else { return }
        do throws(StorageError) {
            try await flushFrozenLocked()
        } catch {
            logger.error("background flush failed; will retry", metadata: ["error": "\(error)"])
            let delay = config.flushRetryDelay
            let signal = flushSignal
            Task {
                try? await Task.sleep(for: delay)
                signal.yield()
            }
        }
    }

    /// Writes each frozen layer, oldest first. Caller holds `maintenance`.
    func flushFrozenLocked() async throws(StorageError) {
        while true {
            let next = state.withLock { s -> (InMemoryLayer, IndexFile, Wal?)? in
                guard s.lifecycle == .active, let layer = s.frozen.first else { return nil }
                return (layer, s.index, s.wal)
            }
            guard let (layer, index, wal) = next else { return }
            let (id, directory, cache, failpoints) = (self.id, self.directory, self.cache, self.failpoints)
            let result: Result<(LayerReader, IndexFile), StorageError>
            do throws(StorageError) {
                let r = try await BlockingIO.run { () throws(StorageError) -> (LayerReader, IndexFile) in
                    try Self.writeL0(layer, index: index, tenant: id, directory: directory, cache: cache, failpoints: failpoints)
                }
                result = .success(r)
            } catch {
                result = .failure(error)
            }
            switch result {
            case .failure(let error):
                state.withLock { $0.lastFlushError = "\(error)" }
                throw error
            case .success(let (reader, newIndex)):
                state.withLock { s in
                    s.layers.insert(reader)
                    s.frozen.removeFirst()
                    s.index = newIndex
                    s.lastFlushError = nil
                }
                logger.debug("flushed L0 layer", metadata: [
                    "layer": "\(reader.descriptor.fileName)", "bytes": "\(reader.descriptor.size)",
                ])
                if let wal {
                    let dcl = Lsn(newIndex.diskConsistentLsn)
                    try await BlockingIO.run { () throws(StorageError) in
                        try failpoints.hit("flush-after-index-before-wal-truncate")
                        wal.removeSegments(coveredBy: dcl)
                    }
                }
            }
        }
    }

    /// Writes one frozen layer and lists it in a new index. If anything fails
    /// after the publish, the published file is removed before returning the
    /// error, so a retry can write the same name.
    private static func writeL0(
        _ layer: InMemoryLayer, index: IndexFile, tenant: TenantId, directory: String, cache: PageCache,
        failpoints: Failpoints
    ) throws(StorageError) -> (LayerReader, IndexFile) {
        let writer = try LayerWriter(
            directory: directory, tenant: tenant, kind: .delta, lsnStart: layer.startLsn, lsnEnd: layer.endLsn,
            generation: index.generation, failpoints: failpoints)
        for (key, versions) in layer.sortedRecords() {
            for v in versions { try writer.append(key: key, lsn: v.lsn, value: v.value) }
        }
        let descriptor = try writer.finish()
        do throws(StorageError) {
            try failpoints.hit("after-layer-publish-before-index")
            let reader = try LayerReader(directory: directory, name: descriptor.name, tenant: tenant, cache: cache,
                                         expectedSize: descriptor.size)
            try failpoints.hit("flush-before-index")
            var newIndex = index
            newIndex.layers.append(IndexFile.Layer(name: descriptor.fileName, size: descriptor.size, level: 0))
            newIndex.diskConsistentLsn = layer.endLsn.rawValue
            try newIndex.write(directory: directory, failpoints: failpoints)
            return (reader, newIndex)
        } catch {
            _ = unlink(directory + "/" + descriptor.fileName)
            Directory.fsync(directory)
            throw error
        }
    }
}
