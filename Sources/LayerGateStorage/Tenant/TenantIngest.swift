/// PutRecords: validate, append to the WAL with group commit, then make the
/// records visible. A put is answered only after its bytes are fsynced.
extension Tenant {
    /// Stores a batch of records. Returns the tenant's last_record_lsn, durable
    /// when this returns. Any invalid record rejects the whole batch and stores nothing.
    public func put(_ records: [Record]) async throws(StorageError) -> Lsn {
        try Self.validateBatch(records)
        let bytes = Wal.encode(records)
        // Back-pressure: ingest must not outrun flushing without bound.
        while state.withLock({ $0.frozen.count >= config.maxFrozenLayers && $0.lifecycle == .active }) {
            flushSignal.yield()
            try? await Task.sleep(for: .milliseconds(2))
        }
        let result: Result<Lsn, StorageError> = await withCheckedContinuation { c in
            let outcome = state.withLock { s -> Result<Bool, StorageError> in
                if let e = TenantLifecycle.admission(s.lifecycle, tenant: id) { return .failure(e) }
                let first = records[0].lsn
                guard first > s.reservedLsn else {
                    return .failure(.invalidArgument(
                        "tenant \(id): LSN \(first) is not above the last record LSN \(s.reservedLsn)"))
                }
                s.reservedLsn = records[records.count - 1].lsn
                s.pending.append(PendingPut(records: records, bytes: bytes, continuation: c))
                if s.committing { return .success(false) }
                s.committing = true
                return .success(true)
            }
            switch outcome {
            case .failure(let e): c.resume(returning: .failure(e))
            case .success(true): BlockingIO.spawn { self.commitLoop() }
            case .success(false): break
            }
        }
        return try result.get()
    }

    /// The whole-batch rules of PutRecords that do not depend on the tenant.
    static func validateBatch(_ records: [Record]) throws(StorageError) {
        guard !records.isEmpty else { throw .invalidArgument("a put needs at least one record") }
        var sameLsnKeys: Set<PageKey> = []
        for (i, r) in records.enumerated() {
            try r.validate()
            if i > 0 {
                let prev = records[i - 1]
                guard prev.lsn <= r.lsn else {
                    throw .invalidArgument("records out of LSN order: \(r.lsn) after \(prev.lsn)")
                }
                if prev.lsn == r.lsn {
                    if sameLsnKeys.isEmpty { sameLsnKeys.insert(prev.key) }
                    guard sameLsnKeys.insert(r.key).inserted else {
                        throw .invalidArgument("record for \(r.key) at \(r.lsn) appears twice")
                    }
                } else {
                    sameLsnKeys.removeAll(keepingCapacity: true)
                }
            }
        }
    }

    /// The commit leader, on an I/O thread: takes every queued put, writes them
    /// with one write and one fsync, then publishes them in LSN order. Puts that
    /// arrive meanwhile ride the next round.
    func commitLoop() {
        while true {
            let next = state.withLock { s -> ([PendingPut], Wal?)? in
                if s.pending.isEmpty {
                    s.committing = false
                    return nil
                }
                defer { s.pending = [] }
                return (s.pending, s.wal)
            }
            guard let (batch, wal) = next else { return }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(batch.reduce(0) { $0 + $1.bytes.count })
            for p in batch { bytes.append(contentsOf: p.bytes) }
            do throws(StorageError) {
                guard let wal else { throw StorageError.tenantUnavailable(id, state: "loading") }
                try wal.append(bytes, firstLsn: batch[0].records[0].lsn, failpoints: failpoints)
            } catch {
                logger.warning("WAL append failed; \(batch.count) puts rejected", metadata: ["error": "\(error)"])
                state.withLock { s in
                    s.reservedLsn = max(s.lastRecordLsn, s.pending.last.map { $0.records[$0.records.count - 1].lsn } ?? .zero)
                }
                for p in batch { p.continuation.resume(returning: .failure(error)) }
                continue
            }
            let (lsn, woken, froze) = state.withLock { s -> (Lsn, [LsnWaiter], Bool) in
                for p in batch { s.open.insert(p.records) }
                s.lastRecordLsn = batch[batch.count - 1].records.last!.lsn
                var woken: [LsnWaiter] = []
                if !s.waiters.isEmpty {
                    for (k, w) in s.waiters where w.lsn <= s.lastRecordLsn {
                        woken.append(w)
                        s.waiters[k] = nil
                    }
                }
                let froze = s.open.approximateBytes >= config.checkpointDistanceBytes
                if froze { Self.freeze(&s) }
                return (s.lastRecordLsn, woken, froze)
            }
            for w in woken {
                w.timer?.cancel()
                w.continuation.resume(returning: .success(()))
            }
            for p in batch { p.continuation.resume(returning: .success(lsn)) }
            if froze { flushSignal.yield() }
        }
    }

    /// Moves the open layer to the frozen list and starts a new WAL segment.
    static func freeze(_ s: inout Inner) {
        guard !s.open.isEmpty else { return }
        s.frozen.append(s.open)
        s.open = InMemoryLayer(startLsn: s.lastRecordLsn.next)
        s.wal?.requestRoll()
    }
}
