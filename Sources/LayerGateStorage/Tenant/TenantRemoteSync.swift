/// The background loop that keeps a tenant's remote copy behind its index
/// (`TenantUpload` does the passes). Runs only with remote storage.
extension Tenant {
    /// Starts an upload pass now: the index changed.
    func indexChanged() {
        guard upload != nil else { return }
        remoteWake.advance(to: remoteWake.value + 1)
    }

    func startBackgroundUpload() {
        guard let upload else { return }
        let (period, retry, cap, wake) = (config.remoteSyncPeriod, config.remoteRetryDelay, config.remoteMaxBackoff, remoteWake)
        Task { [weak self] in
            var seen: UInt64 = 0
            var backoff: Duration?
            var fencedAt: UInt32?
            while true {
                if let backoff {
                    try? await Task.sleep(for: backoff)  // a changed index does not cut a back-off short
                } else {
                    _ = await wake.wait(for: seen + 1, timeout: period)
                }
                seen = wake.value
                guard let self else { return }
                let (lifecycle, index) = self.state.withLock { ($0.lifecycle, $0.index) }
                if lifecycle == .stopped { return }
                guard lifecycle == .active else { continue }
                switch await Self.runPass(upload, index) {
                case .success(.caughtUp):
                    backoff = nil
                    fencedAt = nil
                case .success(.stale(let layer)):
                    if self.state.withLock({ $0.index }) == index {
                        // Still listed, yet neither here nor in the store: nothing to upload it from.
                        let failures = upload.recordFailure(.corruptIndex(
                            key: RemoteIndex.layerKey(self.id, layer),
                            reason: "layer \(layer) has no local file (evicted) and the store no longer holds it"), passing: index)
                        backoff = Self.backoff(retry, failures: failures, cap: cap)
                        self.logger.error("a layer is neither local nor in remote storage", metadata: ["layer": "\(layer)"])
                    } else {
                        backoff = nil
                        wake.advance(to: seen + 1)  // the index that replaced it is there already
                    }
                case .success(.fenced(let newer)):
                    backoff = period
                    if fencedAt != newer {
                        fencedAt = newer
                        self.logger.warning("another server writes this tenant's remote copy with a generation at or above this one: uploads stopped", metadata: [
                            "generation": "\(index.generation)", "newer": "\(newer)",
                        ])
                    }
                case .failure(let error):
                    let failures = upload.recordFailure(error, passing: index)
                    backoff = Self.backoff(retry, failures: failures, cap: cap)
                    self.logger.warning("remote upload failed; retrying", metadata: [
                        "error": "\(error)", "failures": "\(failures)", "retry_in": "\(backoff ?? retry)",
                    ])
                }
            }
        }
    }

    private static func runPass(_ upload: TenantUpload, _ index: IndexFile) async -> Result<TenantUpload.Outcome, RemoteError> {
        await withCheckedContinuation { c in
            BlockingIO.spawn {
                do throws(RemoteError) { c.resume(returning: .success(try upload.pass(index))) } catch { c.resume(returning: .failure(error)) }
            }
        }
    }

    /// Waits until the remote copy holds the current index and nothing waits
    /// for deletion; false after `timeout`, when there is no remote storage,
    /// or at once (after a pass has had its chance) when no pass can catch up
    /// by itself: fenced, or a failure that needs an operator.
    public func waitUntilUploaded(timeout: Duration) async -> Bool {
        guard let upload else { return false }
        let start = ContinuousClock.now
        let deadline = start + timeout
        while ContinuousClock.now < deadline {
            let index = state.withLock { $0.index }
            if upload.isCaughtUp(with: index) { return true }
            if upload.isStuck(at: index), ContinuousClock.now - start > config.remoteRetryDelay * 2 { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
