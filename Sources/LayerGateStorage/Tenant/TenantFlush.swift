/// Freezing the in-memory layer and writing it to an L0 delta layer:
/// gated publish, then the index names it (disk_consistent_lsn moves), then
/// readers see it, then the WAL below it is deleted.
extension Tenant {
    /// Flushes everything ingested so far to layer files and waits for it.
    /// Returns the L0 layers it wrote (none were removed).
    @discardableResult
    public func flush() async throws(StorageError) -> CompactionResult {
        await maintenance.lock()
        defer { maintenance.unlock() }
        try state.withLock { s throws(StorageError) in
            if let e = admission(s) { throw e }
            Self.freeze(&s)
        }
        return try await flushFrozenLocked()
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
            scheduleFlushRetry(after: error)
        }
    }

    /// A put held back by unflushed memory asks for a flush now when the last
    /// one failed at least a retry delay ago: a cleared fault (space freed)
    /// then resumes ingest at once instead of after the back-off, and the
    /// flush is still tried at most once per delay.
    func kickStalledFlush() {
        let kick = state.withLock { s -> Bool in
            guard s.flush.failures > 0, let last = s.flush.lastFailureAt, ContinuousClock.now - last >= config.flushRetryDelay
            else { return false }
            s.flush.lastFailureAt = .now
            return true
        }
        if kick { flushSignal.yield() }
    }

    /// One retry at a time, later after each consecutive failure: a flush that
    /// keeps failing (a full disk) is tried again every few seconds, not in a loop.
    private func scheduleFlushRetry(after error: StorageError) {
        let delay = state.withLock { s -> Duration? in
            guard !s.flush.retryScheduled, s.lifecycle == .active else { return nil }
            s.flush.retryScheduled = true
            return Self.backoff(config.flushRetryDelay, failures: s.flush.failures, cap: config.flushMaxBackoff)
        }
        guard let delay else { return }
        logger.error("background flush failed; retrying later", metadata: [
            "error": "\(error)", "retry_in": "\(delay)",
        ])
        Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard let self else { return }
            self.state.withLock { $0.flush.retryScheduled = false }
            self.flushSignal.yield()
        }
    }

    /// Writes each frozen layer, oldest first, and returns the layers written. Caller holds `maintenance`.
    @discardableResult
    func flushFrozenLocked() async throws(StorageError) -> CompactionResult {
        var written = CompactionResult()
        while true {
            let next = state.withLock { s -> (InMemoryLayer, IndexFile, DirectoryHandle)? in
                guard s.lifecycle == .active, let layer = s.frozen.first, let dir = s.directory else { return nil }
                return (layer, s.index, dir)
            }
            guard let (layer, index, dir) = next else { return written }
            let (id, storage) = (self.id, self.storage)
            let reader: LayerReader
            let newIndex: IndexFile
            let start = ContinuousClock.now
            do throws(StorageError) {
                (reader, newIndex) = try await BlockingIO.run { () throws(StorageError) -> (LayerReader, IndexFile) in
                    try Self.writeL0(layer, index: index, tenant: id, directory: dir, storage: storage)
                }
                storage.metrics.flushed(after: start, failed: false, bytes: reader.descriptor.size)
            } catch {
                storage.metrics.flushed(after: start, failed: true)
                state.withLock { s in
                    s.flush.failures += 1
                    s.flush.lastError = "\(error)"
                    s.flush.lastFailureAt = .now
                }
                throw error
            }
            let flushed = state.withLock { s -> UInt64 in
                s.layers.insert(TenantLayer(reader, download: s.layerDownload))
                s.frozen.removeFirst()
                s.index = newIndex
                s.flush.failures = 0
                s.flush.lastError = nil
                s.flush.layersFlushed += 1
                return s.flush.layersFlushed
            }
            refreshUnflushed()
            written.layersCreated += 1
            written.bytesWritten += reader.descriptor.size
            flushProgress.advance(to: flushed)
            indexChanged()
            logger.debug("flushed L0 layer", metadata: [
                "layer": "\(reader.descriptor.fileName)", "bytes": "\(reader.descriptor.size)",
            ])
            let dcl = Lsn(newIndex.diskConsistentLsn)
            let failpoints = self.failpoints
            do throws(StorageError) {
                try await BlockingIO.run { () throws(StorageError) in try failpoints.hit("flush-after-index-before-wal-truncate") }
                await retireWal(coveredBy: dcl)
            } catch {
                // The layer is listed; the WAL below it goes at the next flush or load.
                logger.warning("WAL below the flush not deleted", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Writes one frozen layer and lists it in a new index. A file published
    /// but not listed when anything fails is removed (`UnlistedLayers`), so a
    /// retry can write the same name.
    private static func writeL0(
        _ layer: InMemoryLayer, index: IndexFile, tenant: TenantId, directory: DirectoryHandle, storage: TenantStorage
    ) throws(StorageError) -> (LayerReader, IndexFile) {
        try storage.budget.admitFlush(bytes: layer.approximateBytes, tenant: tenant)
        let writer = try LayerWriter(
            directory: directory, tenant: tenant, kind: .delta, lsnStart: layer.startLsn, lsnEnd: layer.endLsn,
            generation: index.generation, failpoints: storage.failpoints)
        for (key, versions) in layer.sortedRecords() {
            for v in versions { try writer.append(key: key, lsn: v.lsn, value: v.value) }
        }
        let unlisted = UnlistedLayers(directory: directory)
        defer { unlisted.rollback() }
        let descriptor = try writer.finish()
        unlisted.add(descriptor)
        try storage.failpoints.hit("after-layer-publish-before-index")
        let reader = try LayerReader(directory: directory, name: descriptor.name, tenant: tenant, cache: storage.cache,
                                     openFiles: storage.openFiles, expectedSize: descriptor.size)
        try storage.failpoints.hit("flush-before-index")
        var newIndex = index
        newIndex.layers.append(IndexFile.Layer(name: descriptor.fileName, size: descriptor.size, level: 0))
        newIndex.diskConsistentLsn = layer.endLsn.rawValue
        try newIndex.write(directory: directory, failpoints: storage.failpoints)
        unlisted.disarm()
        return (reader, newIndex)
    }
}
