import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Brings one evicted (or never local, after an attach) layer back from
/// remote storage: into a temp file, checked against the size index.json
/// gives and the CRC-32C the remote index lists, published through the gate
/// under its layer name, and opened as a new file (a new page-cache id).
struct LayerDownload: Sendable {
    let tenant: TenantId
    let directory: DirectoryHandle
    let upload: TenantUpload
    /// The tenant's generation: the remote index consulted is the newest not above it.
    let generation: UInt32
    let cache: PageCache
    let openFiles: OpenFileTable
    let budget: DiskBudget
    let metrics: StorageMetrics
    let failpoints: Failpoints

    private static let tempCounter = Atomic<UInt64>(0)

    /// `published` is set to the file this call gave the layer's name, when it
    /// did: if the open after that fails, the name stays (see below), and the
    /// caller removes it with `removeLeftover` once the layer leaves its map.
    func fetch(_ layer: LayerDescriptor, published: inout FileInfo?) throws(StorageError) -> LayerReader {
        let name = layer.fileName
        let start = ContinuousClock.now
        // Published meanwhile by another copy of this layer's entry (a map from before a reset): it is the layer.
        if let here = try? open(layer) { return here }
        var held = 0
        try budget.admitDownload(bytes: layer.size, tenant: tenant, layer: name, held: &held)
        defer { budget.giveBack(&held) }
        let crc: UInt32
        do throws(RemoteError) { crc = try upload.expectedChecksum(of: name, generation: generation) } catch {
            throw .remote(tenant, error)
        }
        let key = RemoteIndex.layerKey(tenant, name)
        // Ends in ___temp: a crash's leftover is swept by the next load. One
        // process holds the data directory, so a name from an earlier one is a leftover.
        let temp = "\(name).download-\(Self.tempCounter.add(1, ordering: .relaxed).newValue).___temp"
        let fs = directory.fs
        try? fs.unlink(directory.child(temp))
        let got: LocalObject?
        do throws(RemoteError) { got = try upload.store.download(key, into: fs, path: directory.child(temp)) } catch {
            throw .remote(tenant, error)
        }
        guard let got else {
            throw .remote(tenant, .unavailable(operation: "download", key: key,
                                               reason: "layer \(name) is not local, and the store does not hold it (lost from the store?)"))
        }
        do throws(StorageError) {
            try failpoints.hit("remote-download-before-publish")
            guard got.size == layer.size, got.crc32c == crc else {
                throw .corruptLayer(file: directory.child(name), reason: "its copy in remote storage (\(key)) is damaged: \(got.size) bytes with CRC-32C \(got.crc32c), where index.json says \(layer.size) bytes and the remote index CRC-32C \(crc); it was not kept")
            }
            try GatedPublish.publish(directory: directory, temp: temp, final: name)
        } catch {
            try? fs.unlink(directory.child(temp))
            // The name is taken: only the gate gives a layer its name, so what holds it is this layer.
            if case .layerExists = error { return try open(layer) }
            throw error
        }
        // An open that fails now (no descriptor left, say) leaves the name: the
        // file is the layer, checked before it was published, and the next read
        // opens it. Taking the name back could take another map's file: a map
        // from before a reset may have opened it as published meanwhile.
        published = try? fs.stat(directory.child(name))
        try failpoints.hit("remote-download-after-publish")
        let reader = try open(layer)
        metrics.layerDownloaded(bytes: layer.size, since: start)
        return reader
    }

    /// Removes the name a failed open left (`fetch`'s `published`), if it
    /// still names that file. False when the file is still there under it
    /// (the failpoint's `return`, or the unlink failed): the caller keeps it recorded.
    func removeLeftover(_ layer: LayerDescriptor, file: FileInfo) -> Bool {
        if (try? failpoints.hit("remote-leftover-before-unlink")) == nil { return false }
        // A name that is gone, or another file's now, leaves nothing of this one.
        do throws(SystemError) { _ = try directory.fs.unlink(directory.child(layer.fileName), ifItIs: file) } catch {
            return error.errno == ENOENT
        }
        return true
    }

    private func open(_ layer: LayerDescriptor) throws(StorageError) -> LayerReader {
        try LayerReader(directory: directory, name: layer.name, tenant: tenant, cache: cache, openFiles: openFiles,
                        expectedSize: layer.size)
    }
}
