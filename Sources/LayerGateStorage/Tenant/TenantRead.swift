/// GetPage@LSN on a tenant, including the wait for an LSN not yet ingested.
extension Tenant {
    /// Reads the page of `key` as of `lsn` (nil: as of last_record_lsn).
    /// An LSN beyond last_record_lsn waits up to `waitTimeout` (nil: the
    /// configured default) for ingest. Returns the page and the LSN read at.
    public func getPage(key: PageKey, lsn requested: Lsn?, waitTimeout: Duration? = nil) async throws(StorageError)
        -> (page: [UInt8], lsn: Lsn)
    {
        if let lsn = requested, case let last = try snapshot().lastRecordLsn, lsn > last {
            try await waitForLsn(lsn, timeout: waitTimeout ?? config.waitLsnTimeout)
        }
        if let hit = try getPageWithoutWaiting(key: key, lsn: requested) { return hit }
        // A block must come from the disk: read on a read thread, never on the concurrency pool.
        return try await ReadThreads.shared.run { () throws(StorageError) -> (page: [UInt8], lsn: Lsn) in
            var page = [UInt8](repeating: 0, count: pageSize)
            let read = page.withUnsafeMutableBytes { b -> Result<Lsn?, StorageError> in
                do throws(StorageError) { return .success(try self.getPageFromDisk(key: key, lsn: requested, into: b)) } catch {
                    return .failure(error)
                }
            }
            // Nil only if last_record_lsn went below an LSN it reached: never, as records are durable when acknowledged.
            guard let lsn = try read.get() else {
                throw .lsnNotAvailable(self.id, requested: requested ?? Lsn(0), lastRecordLsn: (try? self.snapshot().lastRecordLsn) ?? Lsn(0))
            }
            return (page, lsn)
        }
    }

    /// GetPage without waiting, for an event loop: the page when it can be
    /// built from memory, cached blocks and blocks the OS page cache holds
    /// (copied in without a wait for the disk); nil when it needs the disk or
    /// an LSN not yet ingested (then use `getPage`). Errors are the same as
    /// `getPage`'s (unknown page, GC horizon, tenant state).
    public func getPageWithoutWaiting(key: PageKey, lsn requested: Lsn?) throws(StorageError) -> (page: [UInt8], lsn: Lsn)? {
        var page = [UInt8](repeating: 0, count: pageSize)
        let read = page.withUnsafeMutableBytes { b -> Result<Lsn?, StorageError> in
            do throws(StorageError) { return .success(try getPageWithoutWaiting(key: key, lsn: requested, into: b)) } catch { return .failure(error) }
        }
        guard let lsn = try read.get() else { return nil }
        return (page, lsn)
    }

    /// The same, with the page written into `page` (exactly `pageSize` bytes,
    /// the server's answer buffer: no copy in between). Returns the LSN read
    /// at, or nil when the page needs the disk or a wait (`page` then holds
    /// nothing meaningful).
    public func getPageWithoutWaiting(key: PageKey, lsn requested: Lsn?, into page: UnsafeMutableRawBufferPointer) throws(StorageError) -> Lsn? {
        var miss: BlockMiss?
        var share = ImageShare.never
        return try getPageWithoutWaiting(key: key, lsn: requested, into: page, miss: &miss, share: &share)
    }

    /// The same; when it needs the disk for blocks of a layer file, `miss`
    /// names them (the event loop may read them itself, `BlockMiss`). An
    /// in-memory image that is the whole page goes to `share` instead of into
    /// `page`, when `share` allows it.
    public func getPageWithoutWaiting(key: PageKey, lsn requested: Lsn?, into page: UnsafeMutableRawBufferPointer,
                                      miss: inout BlockMiss?, share: inout ImageShare) throws(StorageError) -> Lsn? {
        try readNow(key: key, lsn: requested, into: page, policy: .withoutWaiting, miss: &miss, share: &share)
    }

    /// The same, reading blocks from disk as needed: it blocks, so call it on
    /// a read thread (`ReadThreads.shared`), never on an event loop or the
    /// concurrency pool. Returns nil only when the LSN is not ingested yet
    /// (then use `getPage`, which waits).
    public func getPageFromDisk(key: PageKey, lsn requested: Lsn?, into page: UnsafeMutableRawBufferPointer) throws(StorageError) -> Lsn? {
        var miss: BlockMiss?
        var share = ImageShare.never
        return try readNow(key: key, lsn: requested, into: page, policy: .mayReadDisk, miss: &miss, share: &share)
    }

    /// The LSN read at; nil when that LSN is not ingested yet, or (`.withoutWaiting`) a block needs the disk.
    private func readNow(key: PageKey, lsn requested: Lsn?, into page: UnsafeMutableRawBufferPointer,
                         policy: ReadPolicy, miss: inout BlockMiss?, share: inout ImageShare) throws(StorageError) -> Lsn? {
        let snap = try snapshot()
        let lsn = requested ?? snap.lastRecordLsn
        guard lsn <= snap.lastRecordLsn else { return nil }
        guard lsn >= snap.gcCutoff else { throw .lsnBelowGcHorizon(id, requested: lsn, cutoff: snap.gcCutoff) }
        let found: Bool?
        switch policy {
        case .mayReadDisk:
            do throws(StorageError) {
                found = try ReadPath.reconstruct(key: key, lsn: lsn, open: snap.open, frozen: snap.frozen, layers: snap.layers, into: page)
            } catch {
                // A read that outlived the layer map it started from (a reset reloaded the
                // tenant, or a detach or shutdown stopped it, and a download's temp file or
                // directory went with the old one) failed because of that: say so, and the
                // client reads again, rather than report what the vanished files made of it.
                if let replaced = state.withLock({ s in
                    admission(s) ?? (s.generation == snap.generation ? nil
                        : .tenantUnavailable(id, state: "reloaded by a reset during the read"))
                }) { throw replaced }
                throw error
            }
        case .withoutWaiting:
            found = try ReadPath.reconstructWithoutWaiting(key: key, lsn: lsn, open: snap.open, frozen: snap.frozen,
                                                      layers: snap.layers, into: page, miss: &miss, share: &share)
        }
        guard let found else { return nil }
        guard found else { throw .pageNotFound(id, key, lsn) }
        return lsn
    }

    private struct Snapshot {
        /// Each load (a reset's too) has a new one.
        var generation: UInt32
        var lastRecordLsn: Lsn
        var gcCutoff: Lsn
        var open: InMemoryLayer
        var frozen: [InMemoryLayer]
        var layers: LayerMap
    }

    private func snapshot() throws(StorageError) -> Snapshot {
        try state.withLock { s throws(StorageError) -> Snapshot in
            if let e = admission(s) { throw e }
            return Snapshot(generation: s.generation, lastRecordLsn: s.lastRecordLsn, gcCutoff: s.gcCutoff, open: s.open, frozen: s.frozen,
                            layers: s.layers)
        }
    }

    /// Suspends until last_record_lsn reaches `lsn`, or fails with lsnNotAvailable after `timeout`.
    func waitForLsn(_ lsn: Lsn, timeout: Duration) async throws(StorageError) {
        switch await lsnWait.wait(for: lsn.rawValue, timeout: timeout) {
        case .reached: return
        case .failed(let e): throw e
        case .timedOut(let current): throw .lsnNotAvailable(id, requested: lsn, lastRecordLsn: Lsn(current))
        }
    }
}
