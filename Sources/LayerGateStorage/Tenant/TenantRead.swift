/// GetPage@LSN on a tenant, including the wait for an LSN not yet ingested.
extension Tenant {
    /// Reads the page of `key` as of `lsn` (nil: as of last_record_lsn).
    /// An LSN beyond last_record_lsn waits up to `waitTimeout` (nil: the
    /// configured default) for ingest. Returns the page and the LSN read at.
    public func getPage(key: PageKey, lsn requested: Lsn?, waitTimeout: Duration? = nil) async throws(StorageError)
        -> (page: [UInt8], lsn: Lsn)
    {
        var snap = try snapshot()
        let lsn = requested ?? snap.lastRecordLsn
        if lsn > snap.lastRecordLsn {
            try await waitForLsn(lsn, timeout: waitTimeout ?? config.waitLsnTimeout)
            snap = try snapshot()
        }
        guard lsn >= snap.gcCutoff else { throw .lsnBelowGcHorizon(id, requested: lsn, cutoff: snap.gcCutoff) }
        guard let page = try ReadPath.reconstruct(key: key, lsn: lsn, open: snap.open, frozen: snap.frozen, layers: snap.layers)
        else { throw .pageNotFound(id, key, lsn) }
        return (page, lsn)
    }

    /// GetPage without waiting and without disk I/O: the page when it can be
    /// built from memory and cached blocks alone; nil when it needs a disk read
    /// or an LSN not yet ingested (then use `getPage`). Errors are the same as
    /// `getPage`'s (unknown page, GC horizon, tenant state).
    public func getPageFromCache(key: PageKey, lsn requested: Lsn?) throws(StorageError) -> (page: [UInt8], lsn: Lsn)? {
        var page = [UInt8](repeating: 0, count: pageSize)
        let read = page.withUnsafeMutableBytes { b -> Result<Lsn?, StorageError> in
            do throws(StorageError) { return .success(try getPageFromCache(key: key, lsn: requested, into: b)) } catch { return .failure(error) }
        }
        guard let lsn = try read.get() else { return nil }
        return (page, lsn)
    }

    /// The same, with the page written into `page` (exactly `pageSize` bytes,
    /// the server's answer buffer: no copy in between). Returns the LSN read
    /// at, or nil when the page needs a disk read or a wait (`page` then holds
    /// nothing meaningful).
    public func getPageFromCache(key: PageKey, lsn requested: Lsn?, into page: UnsafeMutableRawBufferPointer) throws(StorageError) -> Lsn? {
        let snap = try snapshot()
        let lsn = requested ?? snap.lastRecordLsn
        guard lsn <= snap.lastRecordLsn else { return nil }
        guard lsn >= snap.gcCutoff else { throw .lsnBelowGcHorizon(id, requested: lsn, cutoff: snap.gcCutoff) }
        do throws(StorageError) {
            guard try ReadPath.reconstruct(key: key, lsn: lsn, open: snap.open, frozen: snap.frozen, layers: snap.layers,
                                           into: page, policy: .cachedOnly)
            else { throw .pageNotFound(id, key, lsn) }
            return lsn
        } catch .notCached {
            return nil
        }
    }

    private struct Snapshot {
        var lastRecordLsn: Lsn
        var gcCutoff: Lsn
        var open: InMemoryLayer
        var frozen: [InMemoryLayer]
        var layers: LayerMap
    }

    private func snapshot() throws(StorageError) -> Snapshot {
        try state.withLock { s throws(StorageError) -> Snapshot in
            if let e = admission(s) { throw e }
            return Snapshot(lastRecordLsn: s.lastRecordLsn, gcCutoff: s.gcCutoff, open: s.open, frozen: s.frozen,
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
