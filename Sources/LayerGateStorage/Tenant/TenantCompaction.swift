/// Compaction: L0→L1 merge, image layers, GC — each step publishes its
/// outputs through the gate, then one index update adds them and removes its
/// inputs, then the inputs' files go once no read holds them.
extension Tenant {
    /// Flushes, then compacts now (even while the background loop backs off),
    /// and returns what it did, the flush's L0 layers included (a call that
    /// only flushed says it created a layer). `forceImageLayers` writes images
    /// regardless of the threshold. A failure at any step, the flush
    /// included, counts in `compactionFailures`.
    public func compact(forceImageLayers: Bool = false) async throws(StorageError) -> CompactionResult {
        var result: CompactionResult
        do throws(StorageError) { result = try await flush() } catch {
            recordCompactionFailure(error)
            throw error
        }
        result.add(try await runCompaction(explicit: true, forceImages: forceImageLayers))
        return result
    }

    func runCompaction(explicit: Bool, forceImages: Bool) async throws(StorageError) -> CompactionResult {
        await compactionLock.lock()
        defer { compactionLock.unlock() }
        var result = CompactionResult()
        var failure: StorageError?
        let start = ContinuousClock.now
        defer { storage.metrics.compactionRan(since: start) }
        let pressure = storage.budget.isUnderPressure()
        if pressure {
            // Ingest is refused for space: first what gives space back — images
            // at the GC cutoff, then GC — before merges that need space.
            do throws(StorageError) {
                result.add(try await createImages(force: false, atGcCutoff: true))
                result.add(try await collectGarbage())
            } catch {
                if case .cancelled = error { throw error }
                failure = error
            }
        }
        do throws(StorageError) {
            result.add(try await mergeL0(explicit: explicit))
            // Images at the newest LSN take space and give none back: not while
            // ingest is refused for space (unless asked for), so the room stays
            // for images at the GC cutoff.
            if !pressure || forceImages { result.add(try await createImages(force: forceImages, atGcCutoff: false)) }
        } catch {
            if case .cancelled = error { throw error }  // reset or close, not a failure of compaction
            failure = failure ?? error
        }
        // GC needs no space, and gives some back: it runs even when a step above failed.
        do throws(StorageError) { result.add(try await collectGarbage()) } catch {
            if case .cancelled = error { throw error }
            failure = failure ?? error
        }
        if let failure {
            recordCompactionFailure(failure)
            throw failure
        }
        state.withLock { s in
            s.compaction.failures = 0
            s.compaction.lastError = nil
            s.compaction.notBefore = nil
        }
        if result.layersCreated + result.layersRemoved > 0 {
            logger.info("compaction done", metadata: [
                "created": "\(result.layersCreated)", "removed": "\(result.layersRemoved)",
                "bytes_written": "\(result.bytesWritten)",
            ])
        }
        return result
    }

    /// Counts a failed compaction and sets the back-off of the background loop.
    /// A tenant that is not serving (reset, close) is not a compaction failure.
    private func recordCompactionFailure(_ error: StorageError) {
        switch error {
        case .cancelled, .tenantUnavailable, .tenantBroken, .tenantNotFound: return
        default: break
        }
        let (period, cap) = (config.compactionPeriod, config.compactionMaxBackoff)
        storage.metrics.compactionFailed()
        let failures = state.withLock { s -> Int in
            s.compaction.failures += 1
            s.compaction.lastError = "\(error)"
            s.compaction.notBefore = .now + Self.backoff(period, failures: s.compaction.failures, cap: cap)
            return s.compaction.failures
        }
        logger.warning("compaction failed", metadata: ["error": "\(error)", "consecutive_failures": "\(failures)"])
    }

    private struct Snapshot {
        var layers: LayerMap
        var planLayers: [CompactionPlan.Layer]
        var index: IndexFile
        var lastRecordLsn: Lsn
        var directory: DirectoryHandle
    }

    private func snapshot() throws(StorageError) -> Snapshot {
        try state.withLock { s throws(StorageError) -> Snapshot in
            if let e = admission(s) { throw e }
            guard let dir = s.directory else { throw .tenantUnavailable(id, state: s.lifecycle.name) }
            let levels = Dictionary(s.index.layers.map { ($0.name, $0.level ?? 0) }, uniquingKeysWith: { a, _ in a })
            return Snapshot(
                layers: s.layers,
                planLayers: s.layers.layers.map {
                    CompactionPlan.Layer(name: $0.descriptor.name, level: levels[$0.descriptor.fileName] ?? 0,
                                         size: $0.descriptor.size)
                },
                index: s.index, lastRecordLsn: s.lastRecordLsn, directory: dir)
        }
    }

    private var cancellationCheck: @Sendable () -> Bool {
        { [weak self] in self?.state.withLock { $0.compaction.cancelled } ?? true }
    }


    /// Merges L0 deltas into L1 in steps that fit the free space (and
    /// `compactionBatchBytes`), oldest first, so freeing a little space lets
    /// compaction make progress.
    private func mergeL0(explicit: Bool) async throws(StorageError) -> CompactionResult {
        var total = CompactionResult()
        while true {
            let snap = try snapshot()
            let l0 = CompactionPlan.l0ToMerge(snap.planLayers, threshold: explicit ? 2 : config.compactionThreshold)
            guard !l0.isEmpty else { return total }
            let room = try storage.budget.compactionBudget()
            let batch = CompactionPlan.l0Batch(l0, batchBytes: config.compactionBatchBytes, room: room,
                                               targetBytes: config.targetFileBytes)
            guard !batch.isEmpty else {
                // Steps already done count: the rest waits for the next compaction.
                if total.layersRemoved > 0 { return total }
                let need = CompactionPlan.mergeBound(l0[0].size + l0[1].size, targetBytes: config.targetFileBytes)
                throw .resourceExhausted(
                    "tenant \(id): compaction needs \(ByteCount.describe(need)) of free space for its smallest step (two L0 layers); \(ByteCount.describe(room)) are free beyond what flushes need. Free space on the data directory's filesystem; compaction resumes by itself")
            }
            total.add(try await mergeStep(batch, snap))
        }
    }

    private func mergeStep(_ inputs: [CompactionPlan.Layer], _ snap: Snapshot) async throws(StorageError)
        -> CompactionResult
    {
        let names = Set(inputs.map(\.fileName))
        let readers = snap.layers.layers.filter { names.contains($0.descriptor.fileName) }
            .sorted { $0.descriptor.name.lsnStart < $1.descriptor.name.lsnStart }
        guard let lsnStart = readers.first?.descriptor.name.lsnStart,
              let lsnEnd = readers.map(\.descriptor.name.lsnEnd).max()
        else { return CompactionResult() }
        let (id, dir, failpoints, target, disk) = (self.id, snap.directory, self.failpoints, config.targetFileBytes, storage.budget)
        let generation = snap.index.generation
        let cancelled = cancellationCheck
        let outputs = try await BlockingIO.run { () throws(StorageError) -> UnlistedLayers in
            let out = CompactionOutputs(
                directory: dir, tenant: id, kind: .delta, lsnStart: lsnStart, lsnEnd: lsnEnd, generation: generation,
                targetBytes: target, budget: disk, failpoints: failpoints, isCancelled: cancelled)
            do throws(StorageError) {
                var cursors = try readers.map { r throws(StorageError) in try LayerCursor(try r.local()) }
                // The values in file order, in windows past the page cache (GetPage's pages stay in it).
                let scans = cursors.map { LayerScan($0.layer, inputs: cursors.count) }
                var last: (PageKey, Lsn)?
                while let i = smallestCursor(cursors), let e = cursors[i].current {
                    // Overlapping inputs (a rebuilt index can list both sides of a
                    // compaction that crashed) hold the same value twice: keep one.
                    if last.map({ $0 != e.key || $1 != e.lsn }) ?? true {
                        try out.append(key: e.key, lsn: e.lsn, value: try scans[i].value(of: e))
                        last = (e.key, e.lsn)
                    }
                    try cursors[i].advance()
                }
                try out.finish()
                return out.published
            } catch {
                out.discardAll()
                throw error
            }
        }
        return try await commit(added: outputs, removed: names, gcCutoff: nil, generation: generation)
    }

    /// Image layers of every key: at the newest LSN (when enough deltas sit
    /// above the newest images, or forced), or `atGcCutoff`, where GC can use
    /// them at once (`CompactionPlan.gcImageLsn`).
    private func createImages(force: Bool, atGcCutoff: Bool) async throws(StorageError) -> CompactionResult {
        let snap = try snapshot()
        let lsn: Lsn?
        if atGcCutoff {
            let cutoff = CompactionPlan.cutoff(lastRecordLsn: snap.lastRecordLsn, horizon: config.gcHorizonLsn,
                                               currentCutoff: Lsn(snap.index.gcCutoffLsn))
            lsn = CompactionPlan.gcImageLsn(snap.planLayers, cutoff: min(cutoff, Lsn(snap.index.diskConsistentLsn)))
        } else {
            lsn = CompactionPlan.imageLsn(
                snap.planLayers, diskConsistentLsn: Lsn(snap.index.diskConsistentLsn),
                threshold: config.imageCreationThreshold, force: force)
        }
        guard let lsn else { return CompactionResult() }
        let stoppedAt = state.withLock { $0.compaction.imagesNeedAtLeast }
        let need = max(1, storage.budget.imageSetBytes(of: id), stoppedAt)
        let budget = try storage.budget.compactionBudget()
        guard budget >= need else {
            let about = need == stoppedAt ? "at least \(ByteCount.describe(need)) (an earlier attempt stopped there)" : "about \(ByteCount.describe(need))"
            throw .resourceExhausted(
                "tenant \(id): image layers need \(about) of free space; \(ByteCount.describe(budget)) are free beyond what flushes need. Free space on the data directory's filesystem; compaction resumes by itself")
        }
        let (id, dir, failpoints, target, disk) = (self.id, snap.directory, self.failpoints, config.targetFileBytes, storage.budget)
        let generation = snap.index.generation
        let layers = snap.layers
        let cancelled = cancellationCheck
        // The outcome, and what a set stopped for room showed it needs at least.
        let (written, stoppedNeeding) = try await BlockingIO.run {
            () throws(StorageError) -> (Result<UnlistedLayers, StorageError>, Int?) in
            let out = CompactionOutputs(
                directory: dir, tenant: id, kind: .image, lsnStart: lsn, lsnEnd: lsn, generation: generation,
                targetBytes: target, budget: disk, failpoints: failpoints, isCancelled: cancelled)
            do throws(StorageError) {
                // Every key any layer holds, in order; the page of each as of `lsn`.
                var cursors = try layers.layers.map { r throws(StorageError) in try LayerCursor(try r.local()) }
                let none = InMemoryLayer(startLsn: lsn.next)
                var previous: PageKey?
                while let i = smallestCursor(cursors), let key = cursors[i].current?.key {
                    try cursors[i].advance()
                    guard key != previous else { continue }
                    previous = key
                    if let page = try ReadPath.reconstruct(key: key, lsn: lsn, open: none, frozen: [], layers: layers) {
                        try out.append(key: key, lsn: lsn, value: .image(page))
                    }
                }
                try out.finish()
                return (.success(out.published), nil)
            } catch {
                out.discardAll()
                return (.failure(error), out.stoppedNeedingAtLeast)
            }
        }
        if let stoppedNeeding {
            state.withLock { $0.compaction.imagesNeedAtLeast = max($0.compaction.imagesNeedAtLeast, stoppedNeeding) }
        }
        let outputs = try written.get()
        guard !outputs.layers.isEmpty else { return CompactionResult() }
        let result = try await commit(added: outputs, removed: [], gcCutoff: nil, generation: generation)
        state.withLock { $0.compaction.imagesNeedAtLeast = 0 }
        return result
    }

    private func collectGarbage() async throws(StorageError) -> CompactionResult {
        let snap = try snapshot()
        let (cutoff, garbage) = CompactionPlan.garbage(
            snap.planLayers, lastRecordLsn: snap.lastRecordLsn, horizon: config.gcHorizonLsn,
            currentCutoff: Lsn(snap.index.gcCutoffLsn))
        guard !garbage.isEmpty || cutoff.rawValue > snap.index.gcCutoffLsn else { return CompactionResult() }
        let result = try await commit(added: UnlistedLayers(directory: snap.directory), removed: Set(garbage.map(\.fileName)),
                                      gcCutoff: cutoff, generation: snap.index.generation)
        storage.metrics.collectedGarbage(layers: result.layersRemoved)
        return result
    }

    /// The single index update of a step. Until it succeeds the outputs are
    /// unlisted: on any failure the guard deletes them, never a listed layer.
    private func commit(added: UnlistedLayers, removed: Set<String>, gcCutoff: Lsn?, generation: UInt32)
        async throws(StorageError) -> CompactionResult
    {
        defer { added.rollback() }
        await maintenance.lock()
        defer { maintenance.unlock() }
        let (id, storage) = (self.id, self.storage)
        let current = state.withLock { s -> (IndexFile, DirectoryHandle)? in
            guard s.lifecycle == .active, s.index.generation == generation, !s.compaction.cancelled, let dir = s.directory
            else { return nil }
            return (s.index, dir)
        }
        guard let (index, dir) = current else {
            throw StorageError.cancelled("compaction of tenant \(id): the tenant was reset or stopped")
        }
        let outputs = added.layers
        let (readers, newIndex) = try await BlockingIO.run { () throws(StorageError) -> ([LayerReader], IndexFile) in
            let readers = try outputs.map { d throws(StorageError) in
                try LayerReader(directory: dir, name: d.name, tenant: id, cache: storage.cache,
                                openFiles: storage.openFiles, expectedSize: d.size)
            }
            if !outputs.isEmpty { try storage.failpoints.hit("after-layer-publish-before-index") }
            var next = index
            next.layers.removeAll { removed.contains($0.name) }
            next.layers += outputs.map { IndexFile.Layer(name: $0.fileName, size: $0.size, level: 1) }
            if let gcCutoff { next.gcCutoffLsn = max(next.gcCutoffLsn, gcCutoff.rawValue) }
            try next.write(directory: dir, failpoints: storage.failpoints)
            return (readers, next)
        }
        added.disarm()
        storage.metrics.compactionListed(bytes: outputs.reduce(0) { $0 + $1.size })
        let (layers, gone) = state.withLock { s -> (LayerMap, [TenantLayer]) in
            let gone = removed.compactMap { s.layers.remove(named: $0) }
            for r in readers { s.layers.insert(TenantLayer(r, download: s.layerDownload)) }
            s.index = newIndex
            return (s.layers, gone)
        }
        if !gone.isEmpty {
            // Outside the lock and off the async pool: it may unlink a file (a failed open's leftover).
            _ = try? await BlockingIO.run { for layer in gone { layer.deleteWhenUnused() } }
        }
        noteImageSet(layers)
        indexChanged()
        var r = CompactionResult()
        r.layersCreated = outputs.count
        r.layersRemoved = removed.count
        r.bytesWritten = outputs.reduce(0) { $0 + $1.size }
        return r
    }

    /// Tells the disk budget how large this tenant's newest image set is.
    func noteImageSet(_ layers: LayerMap) {
        let images = layers.layers.filter { $0.descriptor.name.kind == .image }
        guard let newest = images.map(\.descriptor.name.lsnStart).max() else { return }
        let bytes = images.filter { $0.descriptor.name.lsnStart == newest }.reduce(0) { $0 + $1.descriptor.size }
        storage.budget.noteImageSet(of: id, bytes: bytes)
    }

    /// Runs compaction every period, later after failures (exponential
    /// back-off), and at once when ingest is refused for space
    /// (`requestCompactionForSpace`).
    func startBackgroundCompaction() {
        let (period, wake) = (config.compactionPeriod, compactionWake)
        Task { [weak self] in
            var seen: UInt64 = 0
            while true {
                let woken = await wake.wait(for: seen + 1, timeout: period) == .reached
                seen = wake.value
                guard let self else { return }
                let (state, notBefore) = self.state.withLock { ($0.lifecycle, $0.compaction.notBefore) }
                if state == .stopped { return }
                guard state == .active else { continue }
                if !woken, let notBefore, ContinuousClock.now < notBefore { continue }
                _ = try? await self.runCompaction(explicit: false, forceImages: false)
            }
        }
    }

    /// Ingest was refused for space: compact now (GC gives space back),
    /// whatever the back-off says, but at most once every two seconds.
    func requestCompactionForSpace() {
        let go = state.withLock { s -> Bool in
            if let last = s.compaction.lastForSpace, ContinuousClock.now - last < .seconds(2) { return false }
            s.compaction.lastForSpace = .now
            return true
        }
        if go { compactionWake.advance(to: compactionWake.value + 1) }
    }
}
