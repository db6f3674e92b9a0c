/// PutRecords: validate, append to the WAL with group commit, then make the
/// records visible. A put is answered only after its bytes are fsynced.
extension Tenant {
    /// Stores a batch of records. Returns the tenant's last_record_lsn, durable
    /// when this returns. Any invalid record rejects the whole batch and stores
    /// nothing; so does a full disk (`resourceExhausted`), and then every put
    /// queued behind it fails too, so an ingester can resend from its first
    /// failed LSN.
    ///
    /// `after`/`turn` order the puts of one connection: this put is admitted
    /// only once `after` passed, and passes `turn` as soon as it is admitted
    /// or refused, before it is durable. Validation and encoding happen first,
    /// alongside the puts ahead of it.
    public func put(_ records: [Record], after previous: PutTurn? = nil, turn: PutTurn? = nil) async throws(StorageError) -> Lsn {
        let encoded = Result { () throws(StorageError) -> [UInt8] in
            try Self.validateBatch(records)
            return WalFormat.encodeRecords(records)
        }
        await previous?.reached()
        defer { turn?.pass() }  // on every path that does not reach admission
        let bytes = try encoded.get()
        try await waitForFlushRoom()
        let result: Result<Lsn, StorageError> = await withCheckedContinuation { c in
            defer { turn?.pass() }  // admitted (or refused): the next put of the connection may go
            let outcome = state.withLock { s -> CommitQueue<PendingPut>.Admission in
                if let e = admission(s) { return .refused(e) }
                return s.commits.admit(PendingPut(records: records, bytes: bytes, continuation: c),
                                      first: records[0].lsn, last: records[records.count - 1].lsn, tenant: id)
            }
            switch outcome {
            case .refused(let e): c.resume(returning: .failure(e))
            case .queued(startLeader: true): BlockingIO.spawn { self.commitLoop() }
            case .queued(startLeader: false): break
            }
        }
        return try result.get()
    }

    /// Back-pressure: ingest must not outrun flushing without bound. While
    /// `maxFrozenLayers` wait for a flush, a put waits for one to finish —
    /// at most `ingestStallTimeout`, then it is refused, so a flush that keeps
    /// failing (a full disk) never hangs a put.
    private func waitForFlushRoom() async throws(StorageError) {
        let deadline = ContinuousClock.now + config.ingestStallTimeout
        while true {
            let held = state.withLock { s -> UInt64? in
                guard s.lifecycle == .active, s.frozen.count >= config.maxFrozenLayers else { return nil }
                return s.flush.layersFlushed
            }
            guard let flushed = held else { return }
            kickStalledFlush()
            let left = deadline - ContinuousClock.now
            var outcome = SeqWait.Outcome.timedOut(current: flushed)
            if left > .zero { outcome = await flushProgress.wait(for: flushed + 1, timeout: left) }
            switch outcome {
            case .reached: continue
            case .failed(let e): throw e
            case .timedOut:
                let (frozen, lastError) = state.withLock { ($0.frozen.count, $0.flush.lastError) }
                throw .resourceExhausted(
                    "tenant \(id): ingest is ahead of flushing: \(frozen) in-memory layers wait for a flush\(lastError.map { " (none has succeeded since: \($0))" } ?? ""); nothing of this put was stored, retry later")
            }
        }
    }

    /// The whole-batch rules of PutRecords that do not depend on the tenant.
    static func validateBatch(_ records: [Record]) throws(StorageError) {
        guard !records.isEmpty else { throw .invalidArgument("a put needs at least one record") }
        var order = RecordOrder()
        for r in records {
            try r.validate()
            if let problem = order.accept(r) { throw .invalidArgument(problem) }
        }
    }

    /// The commit leader, on an I/O thread: takes every queued put, writes them
    /// as one commit with one fsync, then publishes them in LSN order. Puts that
    /// arrive meanwhile ride the next round.
    func commitLoop() {
        while true {
            let (work, wal) = state.withLock { s in (s.commits.next(), s.wal) }
            let batch: [PendingPut]
            switch work {
            case .idle(let epoch):
                commitIdle.advance(to: epoch)
                return
            case .retire(let lsn):
                do throws(StorageError) { try wal?.retire(coveredBy: lsn) } catch {
                    logger.warning("could not delete WAL segments below the flush; the next flush tries again",
                                   metadata: ["error": "\(error)"])
                }
                walRetired.advance(to: lsn.rawValue)
                continue
            case .commit(let puts):
                batch = puts
            }
            let parts = batch.map(\.bytes)
            let size = parts.reduce(0) { $0 + $1.count }
            let first = batch[0].records[0].lsn
            let last = batch[batch.count - 1].records[batch[batch.count - 1].records.count - 1].lsn
            var held = 0  // the budget's grant for this commit, until the flushes' room counts its records
            do throws(StorageError) {
                guard let wal else { throw StorageError.tenantUnavailable(id, state: "loading") }
                let memory = batch.reduce(0) { $0 + $1.records.reduce(0) { $0 + InMemoryLayer.countedBytes($1) } }
                try storage.budget.admitIngest(walBytes: Wal.growthBound(parts: parts), memoryBytes: memory, tenant: id, held: &held)
                try wal.append(parts, firstLsn: first, lastLsn: last, failpoints: failpoints)
            } catch {
                storage.budget.giveBack(&held)
                failCommit(batch, error)
                continue
            }
            storage.metrics.ingested(puts: batch.count, records: batch.reduce(0) { $0 + $1.records.count }, bytes: size)
            let (lsn, froze) = state.withLock { s -> (Lsn, Bool) in
                for p in batch { s.open.insert(p.records) }
                s.lastRecordLsn = last
                let froze = s.open.approximateBytes >= config.checkpointDistanceBytes
                if froze { Self.freeze(&s) }
                return (s.lastRecordLsn, froze)
            }
            refreshUnflushed()
            storage.budget.giveBack(&held)
            lsnWait.advance(to: lsn.rawValue)
            for p in batch { p.continuation.resume(returning: .success(lsn)) }
            if froze { flushSignal.yield() }
        }
    }

    /// Asks the commit leader to delete the WAL below `lsn` (starting it if
    /// idle) and waits until it did.
    func retireWal(coveredBy lsn: Lsn) async {
        let start = state.withLock { $0.commits.requestRetire(below: lsn) }
        if start { BlockingIO.spawn { self.commitLoop() } }
        _ = await walRetired.wait(for: lsn.rawValue, timeout: .seconds(60))
    }

    /// A commit that stored nothing: its puts fail, and so does every put
    /// queued behind it (each was accepted above LSNs that are now not stored),
    /// so the next put is checked against what is really durable.
    private func failCommit(_ batch: [PendingPut], _ error: StorageError) {
        let error = error.explainedAsResourceExhausted("tenant \(id): put")
        if error.isResourceExhaustion { requestCompactionForSpace() }
        logger.warning("WAL append failed; puts rejected", metadata: ["error": "\(error)", "puts": "\(batch.count)"])
        let queued = state.withLock { s in s.commits.failQueued(lastDurable: s.lastRecordLsn) }
        for p in batch + queued { p.continuation.resume(returning: .failure(error)) }
    }

    /// Moves the open layer to the frozen list and starts a new WAL segment.
    static func freeze(_ s: inout Inner) {
        guard !s.open.isEmpty else { return }
        s.frozen.append(s.open)
        s.open = InMemoryLayer(startLsn: s.lastRecordLsn.next)
        s.wal?.requestRoll()
    }
}
