import Synchronization

/// Layer files that are published — they have their final names — but that
/// no index lists yet. The one place that undoes them: unless `disarm()` is
/// called after the index commit that lists them, `rollback()` (or dropping
/// the guard) deletes them, so the next attempt can write the same names.
/// That gap, a published file nobody listed or deleted, is what left Neon's
/// compaction stuck.
final class UnlistedLayers: Sendable {
    private let directory: DirectoryHandle
    private let files = Mutex<[LayerDescriptor]>([])

    init(directory: DirectoryHandle) { self.directory = directory }

    deinit { rollback() }

    func add(_ layer: LayerDescriptor) { files.withLock { $0.append(layer) } }

    var layers: [LayerDescriptor] { files.withLock { $0 } }

    /// The index lists them now: keep them.
    func disarm() { files.withLock { $0 = [] } }

    /// Deletes every published, unlisted file. Idempotent.
    func rollback() {
        let doomed = files.withLock { f -> [LayerDescriptor] in
            defer { f = [] }
            return f
        }
        guard !doomed.isEmpty else { return }
        for d in doomed { try? directory.fs.unlink(directory.child(d.fileName)) }
        directory.sync()
    }
}
