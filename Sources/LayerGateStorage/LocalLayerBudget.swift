/// `--local-layer-budget-mib`: with remote storage the local disk is a cache
/// of layer files. A pass every `evictionPeriod` removes the least recently
/// read layer files that the store holds safely (`TenantUpload.isSafelyStored`,
/// and the object's bytes checked once unless this process uploaded it) until
/// the local ones fit the budget; a read that needs one again downloads it.
extension TenantManager {
    /// Starts the eviction loop, when there is a budget and remote storage.
    func startEviction() {
        guard config.localLayerBudgetBytes != nil, storage.remote != nil else { return }
        let period = config.evictionPeriod
        Task { [weak self] in
            while true {
                try? await Task.sleep(for: period)
                guard let self, !self.isShutDown else { return }
                _ = try? await BlockingIO.run { self.evictLayers() }
            }
        }
    }

    /// One eviction pass over every tenant. Blocks (it removes files).
    /// Returns the layer bytes left local and how many files it removed.
    @discardableResult
    public func evictLayers() -> (localBytes: Int, evicted: Int) {
        guard let budget = config.localLayerBudgetBytes, storage.remote != nil else { return (0, 0) }
        LayerClock.advance()
        var local = 0
        var candidates: [(layer: TenantLayer, upload: TenantUpload, lastUsed: UInt64)] = []
        for tenant in tenants.withLock({ Array($0.values) }) {
            let layers = tenant.state.withLock { $0.layers }
            for layer in layers.layers where layer.hasLocalFile {
                local += layer.descriptor.size
                if let upload = tenant.upload, upload.isSafelyStored(layer.descriptor.fileName) {
                    candidates.append((layer, upload, layer.lastUsed))
                }
            }
        }
        var evicted = 0
        if local > budget {
            for c in candidates.sorted(by: { $0.lastUsed < $1.lastUsed }) where local > budget {
                let d = c.layer.descriptor
                guard c.upload.verifiedForEviction(d.fileName, size: d.size) else { continue }
                let freed = c.layer.evict()
                if freed > 0 {
                    local -= freed
                    evicted += 1
                }
            }
            if local > budget {
                logger.debug("local layers stay above the budget: the rest are not in remote storage yet, or in use", metadata: [
                    "local_bytes": "\(local)", "budget_bytes": "\(budget)",
                ])
            }
        }
        storage.metrics.evictionPass(local: local, evicted: evicted)
        return (local, evicted)
    }
}
