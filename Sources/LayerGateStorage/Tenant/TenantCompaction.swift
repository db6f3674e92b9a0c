#if canImport(Glibc)
import Glibc
#endif

/// Compaction: L0→L1 merge, image layers, GC — each step publishes its
/// outputs through the gate, then one index update adds them and removes its
/// inputs, then the inputs' files go once no read holds them.
extension Tenant {
    /// Flushes, then compacts now (even while the background loop backs off),
    /// and returns what it did. `forceImageLayers` writes images regardless of
    /// the threshold.
    public func compact(forceImageLayers: Bool = false) async throws(StorageError) -> CompactionResult {
        try await flush()
        return try await runCompaction(explicit: true, forceImages: forceImageLayers)
    }

    func runCompaction(explicit: Bool, forceImages: Bool) async throws(StorageError) -> CompactionResult {
        await compactionLock.lock()
        defer { compactionLock.unlock() }
        do throws(StorageError) {
            var result = CompactionResult()
            result.add(try await mergeL0(explicit: explicit))
            result.add(try await createImages(force: forceImages))
            result.add(try await collectGarbage())
            state.withLock { s in
                s.compactionFailures = 0
                s.compactionNotBefore = nil
            }
            if result.layersCreated + result.layersRemoved > 0 {
                logger.info("compaction done", metadata: [
                    "created": "\(result.layersCreated)", "removed": "\(result.layersRemoved)",
                    "bytes_written": "\(result.bytesWritten)",
                ])
            }
            return result
        } catch {
            if case .cancelled = error { throw error }  // reset or close, not a failure of compaction
            let period = config.compactionPeriod, cap = config.compactionMaxBackoff
            let failures = state.withLock { s -> Int in
                s.compactionFailures += 1
                s.lastCompactionError = "\(error)"
                var delay = period
                for _ in 1..<min(s.compactionFailures, 20) { delay = min(delay * 2, cap) }
                s.compactionNotBefore = .now + min(delay, cap)
                return s.compactionFailures
            }
            logger.warning("compaction failed", metadata: ["error": "\(error)", "consecutive_failures": "\(failures)"])
            throw error
        }
    }

    private struct Snapshot {
        var layers: LayerMap
        var planLayers: [CompactionPlan.Layer]
        var index: IndexFile
        var lastRecordLsn: Lsn
    }

    private func snapshot() throws(StorageError) -> Snapshot {
        try state.withLock { s throws(StorageError) -> Snapshot in
            if let e = TenantLifecycle.admission(s.lifecycle, tenant: id) { throw e }
            let levels = Dictionary(s.index.layers.map { ($0.name, $0.level ?? 0) }, uniquingKeysWith: { a, _ in a })
            return Snapshot(
                layers: s.layers,
                planLayers: s.layers.layers.map { CompactionPlan.Layer(name: $0.descriptor.name, level: levels[$0.descriptor.fileName] ?? 0) },
                index: s.index, lastRecordLsn: s.lastRecordLsn)
        }
    }

    private var cancellationCheck: @Sendable () -> Bool {
        { [weak self] in self?.state.withLock { $0.compactionCancelled } ?? true }
    }

    private func mergeL0(explicit: Bool) async throws(StorageError) -> CompactionResult {
        let snap = try snapshot()
        let inputs = CompactionPlan.l0ToMerge(snap.planLayers, threshold: explicit ? 2 : config.compactionThreshold)
        guard !inputs.isEmpty else { return CompactionResult() }
        let names = Set(inputs.map(\.fileName))
        let readers = snap.layers.layers.filter { names.contains($0.descriptor.fileName) }
            .sorted { $0.descriptor.name.lsnStart < $1.descriptor.name.lsnStart }
        let (id, directory, failpoints, target) = (self.id, self.directory, self.failpoints, config.targetFileBytes)
        let generation = snap.index.generation
        let cancelled = cancellationCheck
        let outputs = try await BlockingIO.run { () throws(StorageError) -> [LayerDescriptor] in
            let out = CompactionOutputs(
                directory: directory, tenant: id, kind: .delta, lsnStart: readers.first!.descriptor.name.lsnStart,
                lsnEnd: readers.map(\.descriptor.name.lsnEnd).max()!, generation: generation, targetBytes: target,
                failpoints: failpoints, isCancelled: cancelled)
            do throws(StorageError) {
                var cursors = try readers.map { r throws(StorageError) in try LayerCursor(r) }
                while let i = smallestCursor(cursors) {
                    let e = cursors[i].current!
                    try out.append(key: e.key, lsn: e.lsn, value: try cursors[i].layer.value(of: e))
                    try cursors[i].advance()
                }
                return try out.finish()
            } catch {
                out.discardAll()
                throw error
            }
        }
        return try await commit(added: outputs, removed: names, gcCutoff: nil, generation: generation)
    }

    private func createImages(force: Bool) async throws(StorageError) -> CompactionResult {
        let snap = try snapshot()
        guard let lsn = CompactionPlan.imageLsn(
            snap.planLayers, diskConsistentLsn: Lsn(snap.index.diskConsistentLsn),
            threshold: config.imageCreationThreshold, force: force)
        else { return CompactionResult() }
        let (id, directory, failpoints, target) = (self.id, self.directory, self.failpoints, config.targetFileBytes)
        let generation = snap.index.generation
        let layers = snap.layers
        let cancelled = cancellationCheck
        let outputs = try await BlockingIO.run { () throws(StorageError) -> [LayerDescriptor] in
            let out = CompactionOutputs(
                directory: directory, tenant: id, kind: .image, lsnStart: lsn, lsnEnd: lsn, generation: generation,
                targetBytes: target, failpoints: failpoints, isCancelled: cancelled)
            do throws(StorageError) {
                // Every key any layer holds, in order; the page of each as of `lsn`.
                var cursors = try layers.layers.map { r throws(StorageError) in try LayerCursor(r) }
                let none = InMemoryLayer(startLsn: lsn.next)
                var previous: PageKey?
                while let i = smallestCursor(cursors) {
                    let key = cursors[i].current!.key
                    try cursors[i].advance()
                    guard key != previous else { continue }
                    previous = key
                    if let page = try ReadPath.reconstruct(key: key, lsn: lsn, open: none, frozen: [], layers: layers) {
                        try out.append(key: key, lsn: lsn, value: .image(page))
                    }
                }
                return try out.finish()
            } catch {
                out.discardAll()
                throw error
            }
        }
        guard !outputs.isEmpty else { return CompactionResult() }
        return try await commit(added: outputs, removed: [], gcCutoff: nil, generation: generation)
    }

    private func collectGarbage() async throws(StorageError) -> CompactionResult {
        let snap = try snapshot()
        let (cutoff, garbage) = CompactionPlan.garbage(
            snap.planLayers, lastRecordLsn: snap.lastRecordLsn, horizon: config.gcHorizonLsn,
            currentCutoff: Lsn(snap.index.gcCutoffLsn))
        guard !garbage.isEmpty || cutoff.rawValue > snap.index.gcCutoffLsn else { return CompactionResult() }
        return try await commit(added: [], removed: Set(garbage.map(\.fileName)), gcCutoff: cutoff,
                                generation: snap.index.generation)
    }

    /// The single index update of a step. Until it succeeds the outputs are
    /// unlisted: on any failure they are deleted here, never a listed layer.
    private func commit(added: [LayerDescriptor], removed: Set<String>, gcCutoff: Lsn?, generation: UInt32)
        async throws(StorageError) -> CompactionResult
    {
        await maintenance.lock()
        defer { maintenance.unlock() }
        let (id, directory, cache, failpoints) = (self.id, self.directory, self.cache, self.failpoints)
        let current = state.withLock { s -> IndexFile? in
            s.lifecycle == .active && s.index.generation == generation && !s.compactionCancelled ? s.index : nil
        }
        let result: Result<([LayerReader], IndexFile), StorageError>
        do throws(StorageError) {
            guard let current else { throw StorageError.cancelled("compaction of tenant \(id): the tenant was reset") }
            result = .success(try await BlockingIO.run { () throws(StorageError) -> ([LayerReader], IndexFile) in
                let readers = try added.map { d throws(StorageError) in
                    try LayerReader(directory: directory, name: d.name, tenant: id, cache: cache, expectedSize: d.size)
                }
                if !added.isEmpty { try failpoints.hit("after-layer-publish-before-index") }
                var index = current
                index.layers.removeAll { removed.contains($0.name) }
                index.layers += added.map { IndexFile.Layer(name: $0.fileName, size: $0.size, level: 1) }
                if let gcCutoff { index.gcCutoffLsn = max(index.gcCutoffLsn, gcCutoff.rawValue) }
                try index.write(directory: directory, failpoints: failpoints)
                return (readers, index)
            })
        } catch {
            result = .failure(error)
        }
        switch result {
        case .failure(let error):
            let outputs = added
            _ = try? await BlockingIO.run { () in
                for d in outputs { _ = unlink(directory + "/" + d.fileName) }
                if !outputs.isEmpty { Directory.fsync(directory) }
            }
            throw error
        case .success(let (readers, index)):
            state.withLock { s in
                for name in removed { s.layers.remove(named: name)?.deleteWhenUnused() }
                for r in readers { s.layers.insert(r) }
                s.index = index
            }
            var r = CompactionResult()
            r.layersCreated = added.count
            r.layersRemoved = removed.count
            r.bytesWritten = added.reduce(0) { $0 + $1.size }
            return r
        }
    }

    /// Runs compaction every period, later after failures (exponential back-off).
    func startBackgroundCompaction() {
        let period = config.compactionPeriod
        Task { [weak self] in
            while true {
                try? await Task.sleep(for: period)
                guard let self else { return }
                let (state, notBefore) = self.state.withLock { ($0.lifecycle, $0.compactionNotBefore) }
                if state == .stopped { return }
                guard state == .active else { continue }
                if let notBefore, ContinuousClock.now < notBefore { continue }
                _ = try? await self.runCompaction(explicit: false, forceImages: false)
            }
        }
    }
}
