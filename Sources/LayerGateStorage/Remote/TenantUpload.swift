#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// Keeps one tenant's remote copy behind its local index: uploads every
/// listed layer that the store lacks, then the remote index of that local
/// index, then deletes the layer objects no stored index lists any more.
///
/// Driven by `Tenant`'s background loop (`TenantRemoteSync.swift`), one pass
/// at a time, on a blocking-I/O thread. What it knows of the store lives in
/// `state`; a restart learns it again from a listing and the newest remote
/// index of a generation not above its own, so nothing needs a local journal:
/// objects left by a crash (uploaded but never indexed, or not yet deleted)
/// are found in that listing and deleted after the first index is stored.
final class TenantUpload: Sendable {
    enum Outcome: Equatable {
        /// The store holds the remote form of the index the pass was given.
        case caughtUp
        /// A layer of the index had no local file to upload: a compaction
        /// replaced it (take the new index), or it was evicted and the store lost it.
        case stale(layer: String)
        /// A remote index of a newer generation exists: this server stops writing for the tenant.
        case fenced(newer: UInt32)
    }

    /// What `TenantStatus` reports.
    struct Progress: Equatable {
        /// disk_consistent_lsn of the newest remote index stored or found; nil before there is one.
        var remoteConsistentLsn: Lsn?
        var layersPendingUpload = 0
        var failures = 0
        var lastFailure: RemoteError?
        /// Set once a newer generation's index was seen: uploads and deletions stopped.
        var fencedBy: UInt32?
        var uploadedBytes = 0
        /// The index whose pass last failed in a way that needs an operator
        /// (other bytes under a name, a damaged index), not a retry.
        var needsOperator: IndexFile?
    }

    private struct State {
        /// Layer objects the store holds (ours or inherited), with their checksums.
        var stored: [String: UInt32] = [:]
        /// The local index whose remote form was stored last by this process.
        var indexed: IndexFile?
        /// Names the newest stored (or found) remote index lists.
        var listed: Set<String> = []
        /// Layer objects to delete once a stored index no longer lists them.
        var doomed: Set<String> = []
        /// Objects found under our layers' names with other bytes: never
        /// overwritten and never deleted (an operator's to look at).
        var conflicts: Set<String> = []
        /// Objects known to hold their layer's bytes: uploaded or compared by
        /// this process, or verified before an eviction. Learned ones are not, until checked.
        var verified: Set<String> = []
        /// Remote indexes of older generations: deleted once ours is stored,
        /// as the objects they list may be deleted from then on.
        var superseded: Set<UInt32> = []
        /// The generation whose store contents `learn` found; a load (restart, reset) gives a new one to learn.
        var learnedGeneration: UInt32?
        /// This server's claim on the tenant's remote copy, as read at learning and written since.
        var claim = RemoteClaim()
        /// When a pass last listed the store.
        var lastListing: ContinuousClock.Instant?
        /// The generation whose remote index this process created (the first
        /// write of a generation's index may not replace one: it would be another server's).
        var createdIndex: UInt32?
        var progress = Progress()
    }

    let tenant: TenantId
    let store: any RemoteStore
    private let fs: any FileSystem
    /// The tenant's directory, relative to the data directory.
    private let directory: String
    private let logger: Logger
    private let failpoints: Failpoints
    /// How often a pass lists the store though nothing changed here.
    private let auditPeriod: Duration
    private let state = Mutex(State())

    init(tenant: TenantId, store: any RemoteStore, fs: any FileSystem, directory: String, failpoints: Failpoints,
         auditPeriod: Duration = .seconds(60), logger: Logger) {
        self.tenant = tenant
        self.auditPeriod = auditPeriod
        self.store = store
        self.fs = fs
        self.directory = directory
        self.failpoints = failpoints
        self.logger = logger
    }

    /// A failpoint on the way to the store: `return` fails the pass as an unreachable store would.
    private func hit(_ name: String, _ key: String) throws(RemoteError) {
        do throws(StorageError) { try failpoints.hit(name) } catch {
            throw .unavailable(operation: name, key: key, reason: "\(error)")
        }
    }

    func progress(for index: IndexFile) -> Progress {
        state.withLock { s in
            var p = s.progress
            p.layersPendingUpload = index.layers.count { s.stored[$0.name] == nil }
            return p
        }
    }

    /// True when the store holds the remote form of `index` and nothing waits for deletion.
    func isCaughtUp(with index: IndexFile) -> Bool {
        state.withLock { $0.indexed == index && $0.doomed.subtracting($0.conflicts).isEmpty }
    }

    var fencedBy: UInt32? { state.withLock { $0.progress.fencedBy } }

    /// No pass over `index` can catch up by itself: another server writes the
    /// tenant, or the last pass over this very index failed in a way that needs an operator.
    func isStuck(at index: IndexFile) -> Bool {
        state.withLock { $0.progress.fencedBy != nil || $0.progress.needsOperator == index }
    }

    /// True when the local file of `name` may go as far as this process
    /// knows: the newest remote index stored (or found) lists it, its object
    /// is there, and no newer generation writes the tenant (which could delete
    /// the object). `verifiedForEviction` then checks the object's bytes.
    func isSafelyStored(_ name: String) -> Bool {
        state.withLock { s in s.progress.fencedBy == nil && s.listed.contains(name) && s.stored[name] != nil }
    }

    /// True when the object of `name` holds the layer's bytes: known from this
    /// process's upload, or checked now (once) with the store. Blocks.
    func verifiedForEviction(_ name: String, size: Int) -> Bool {
        let (known, crc) = state.withLock { s in (s.verified.contains(name), s.stored[name]) }
        if known { return true }
        guard let crc else { return false }
        let key = RemoteIndex.layerKey(tenant, name)
        let ok: Bool
        do throws(RemoteError) { ok = try store.verify(key, size: size, crc32c: crc) } catch {
            logger.warning("could not check a layer object before evicting its local copy; it stays", metadata: [
                "layer": "\(name)", "error": "\(error)",
            ])
            return false
        }
        if ok {
            state.withLock { _ = $0.verified.insert(name) }
        } else {
            // The only good copy is the local one: keep it, and upload it again once the bad object is gone.
            logger.error("a layer object in remote storage does not hold the layer's bytes; the local copy stays", metadata: [
                "layer": "\(name)", "key": "\(key)",
            ])
            state.withLock { s in
                s.stored.removeValue(forKey: name)
                s.conflicts.insert(name)
            }
        }
        return ok
    }

    /// The CRC-32C a downloaded copy of `name` must have: as known from the
    /// last pass, or else as the newest remote index not above `generation` lists it.
    func expectedChecksum(of name: String, generation: UInt32) throws(RemoteError) -> UInt32 {
        if let crc = state.withLock({ $0.stored[name] }) { return crc }
        let keys = try store.list(prefix: RemoteIndex.prefix(tenant))
        guard let newest = keys.compactMap(RemoteIndex.generation(ofKey:)).filter({ $0 <= generation }).max() else {
            throw .corruptIndex(key: RemoteIndex.prefix(tenant), reason: "layer \(name) is not local and no remote index lists it")
        }
        guard let layer = try RemoteIndex.fetch(tenant, generation: newest, from: store).index.layers.first(where: { $0.name == name }) else {
            throw .corruptIndex(key: RemoteIndex.key(tenant, generation: newest),
                                reason: "layer \(name) is not local and this remote index does not list it")
        }
        return layer.crc32c
    }

    func recordFailure(_ error: RemoteError, passing index: IndexFile) -> Int {
        state.withLock { s in
            s.progress.failures += 1
            s.progress.lastFailure = error
            switch error {
            case .conflict, .corruptIndex, .badConfiguration: s.progress.needsOperator = index
            // A disk's fault may pass (a remount, a retried read): the next pass tries again, as for the store's.
            case .unavailable, .exhausted, .localIO: s.progress.needsOperator = nil
            }
            return s.progress.failures
        }
    }

    /// One pass over `index` (the tenant's committed index.json). Blocks.
    func pass(_ index: IndexFile) throws(RemoteError) -> Outcome {
        let generation = index.generation
        if state.withLock({ $0.learnedGeneration != generation }) {
            if let other = try learn(generation: generation) { return fence(other) }
        }
        let now = ContinuousClock.now
        let work = state.withLock { s in
            s.indexed != index || !s.doomed.subtracting(s.conflicts).isEmpty || index.layers.contains { s.stored[$0.name] == nil }
                // Now and then a pass with nothing to do lists the store all the same: an object lost from it shows.
                || s.lastListing.map { now - $0 >= auditPeriod } ?? true
        }
        guard work else { return caughtUp() }
        let keys = try store.list(prefix: RemoteIndex.prefix(tenant))
        state.withLock { $0.lastListing = now }
        // Nothing is written once a newer generation has written its index, or another server ours.
        if let newer = Self.newest(keys, above: generation) { return fence(newer) }
        if try ownIndexIsForeign(generation) { return fence(generation) }
        // An object gone from the store since (a directory made anew, say) is uploaded again before an index lists it.
        let present = Set(keys.compactMap { $0.split(separator: "/").last.map(String.init) })
        let missing = state.withLock { s in
            s.progress.fencedBy = nil
            s.stored = s.stored.filter { present.contains($0.key) }
            s.verified.formIntersection(s.stored.keys)
            return index.layers.filter { s.stored[$0.name] == nil }
        }
        // 1. Every layer the store lacks. A conflict does not stop the others:
        // each name is looked at, so each object with other bytes is known (and kept).
        var conflict: RemoteError?
        for layer in missing {
            let object: LocalObject
            do throws(StorageError) { object = try LocalObject.measure(fs: fs, path: directory + "/" + layer.name) } catch {
                if case .io(_, _, let e) = error, e == ENOENT { return .stale(layer: layer.name) }
                throw .failed("read local layer", layer.name, error, local: true)
            }
            let key = RemoteIndex.layerKey(tenant, layer.name)
            let put: RemotePut
            do throws(RemoteError) { put = try store.putIfAbsent(key, from: object) } catch {
                // Its file went while it was sent (a compaction's GC): not this disk's failure, a stale index.
                if case .localIO = error, isGone(layer.name) { return .stale(layer: layer.name) }
                throw error
            }
            switch put {
            case .created, .sameExists:
                state.withLock { s in
                    s.stored[layer.name] = object.crc32c
                    s.verified.insert(layer.name)
                    s.progress.uploadedBytes += object.size
                }
                try hit("remote-after-layer-upload", key)
            case .differentExists:
                state.withLock { s in
                    s.conflicts.insert(layer.name)
                    s.doomed.remove(layer.name)
                }
                conflict = conflict ?? .conflict(key: key, reason: "tenant \(tenant): the local layer has CRC-32C \(object.crc32c)")
            }
        }
        if let conflict { throw conflict }
        // 2. The index, once all it lists is stored; never over a newer generation's.
        if state.withLock({ $0.indexed != index }) {
            if let newer = try newerGeneration(than: generation) { return fence(newer) }
            let crcs = state.withLock { $0.stored }
            let key = RemoteIndex.key(tenant, generation: generation)
            let bytes = RemoteIndex(index, crcs: crcs).encoded()
            if state.withLock({ $0.createdIndex != generation }) {
                guard try createIndex(key, bytes, generation: generation) else { return fence(generation) }
            } else {
                if try ownIndexIsForeign(generation) { return fence(generation) }
                try recordIndexWrite(bytes, generation: generation)
                try store.replace(key, bytes: bytes)
            }
            // Confirmed: earlier bodies can no longer be what the store holds (written down with the next record).
            state.withLock { $0.claim.indexCrcs = [Checksum.crc32c(bytes)] }
            state.withLock { s in
                s.doomed.formUnion(s.listed.subtracting(index.layerNames))
                s.listed = index.layerNames
                s.indexed = index
                s.progress.remoteConsistentLsn = Lsn(index.diskConsistentLsn)
            }
        }
        // 3. Objects no stored index lists any more, none of a newer generation,
        // each only while no newer generation has written an index.
        let (doomed, superseded) = state.withLock { s in (s.doomed.subtracting(s.listed).subtracting(s.conflicts), s.superseded) }
        for name in doomed.sorted() {
            if let newer = try newerGeneration(than: generation) { return fence(newer) }
            try hit("remote-before-delete", RemoteIndex.layerKey(tenant, name))
            try store.delete(RemoteIndex.layerKey(tenant, name))
            state.withLock { s in
                s.doomed.remove(name)
                s.stored.removeValue(forKey: name)
            }
        }
        for old in superseded.sorted() where old < generation {
            if let newer = try newerGeneration(than: generation) { return fence(newer) }
            try store.delete(RemoteIndex.key(tenant, generation: old))
            _ = state.withLock { $0.superseded.remove(old) }
        }
        state.withLock { $0.doomed.subtract($0.listed) }  // re-uploaded and listed again: kept
        return caughtUp()
    }

    /// The first write of this generation's remote index: create-only. False
    /// when an index of this generation exists that this process did not write
    /// (another server attached with it): then nothing more is written here.
    private func createIndex(_ key: String, _ bytes: [UInt8], generation: UInt32) throws(RemoteError) -> Bool {
        try recordIndexWrite(bytes, generation: generation)
        var created = try store.create(key, bytes: bytes)
        if !created, let there = try store.get(key, limit: RemoteIndex.maxBytes) {
            created = !isForeignIndex(there)  // a body recorded before one of our creates: the answer was lost
            if created { try store.replace(key, bytes: bytes) }
        }
        guard created else {
            logger.error("another server wrote this tenant's remote index of this server's own generation: uploads stopped", metadata: [
                "generation": "\(generation)", "key": "\(key)",
            ])
            return false
        }
        state.withLock { $0.createdIndex = generation }
        return true
    }

    private func caughtUp() -> Outcome {
        state.withLock { s in
            s.progress.failures = 0
            s.progress.lastFailure = nil
            s.progress.needsOperator = nil
        }
        return .caughtUp
    }

    /// True when the local file of `name` no longer exists (ENOENT; not any failure to look).
    private func isGone(_ name: String) -> Bool {
        do throws(SystemError) {
            _ = try fs.stat(directory + "/" + name)
            return false
        } catch {
            return error.errno == ENOENT
        }
    }

    /// What the store holds for this tenant, from a listing and the newest
    /// remote index of a generation not above ours. Returns a newer generation, if any.
    private func learn(generation: UInt32) throws(RemoteError) -> UInt32? {
        let claim: RemoteClaim
        do throws(StorageError) { claim = try RemoteClaim.read(fs: fs, directory: directory) } catch {
            throw .failed("read the remote claim", RemoteClaim.fileName, error, local: true)
        }
        state.withLock { $0.claim = claim }
        // Fenced once, fenced for good: a later load's higher generation must not win over the other server.
        if let other = claim.fencedBy { return other }
        let keys = try store.list(prefix: RemoteIndex.prefix(tenant))
        let generations = keys.compactMap(RemoteIndex.generation(ofKey:))
        // An index of our own generation is not ours: every load takes a generation no index of ours has.
        if let other = generations.filter({ $0 >= generation }).max() { return other }
        // One newer than anything we claimed is another server's (it attached while we were away), and
        // an index of a tenant we never claimed (created here, not attached) is another tenant's under its id.
        if let newest = generations.max(), claim.claimed.map({ newest > $0 }) ?? true { return newest }
        var base: RemoteIndex?
        if let g = generations.max() {
            let (index, bytes) = try RemoteIndex.fetch(tenant, generation: g, from: store)
            // The newest index is of the generation we claimed, but not a body we wrote: another server's.
            if g == claim.claimed, isForeignIndex(bytes) { return g }
            base = index
        }
        // What the index lists is stored only if the store still holds it: an
        // object lost or cut short since is uploaded again (or reported, if
        // other bytes sit under its name), never listed again unchecked.
        var present: [String: UInt32] = [:]
        for l in base?.layers ?? [] {
            guard let head = try store.head(RemoteIndex.layerKey(tenant, l.name)), head.size == l.size,
                  head.crc32c == nil || head.crc32c == l.crc32c
            else {
                logger.warning("a layer the remote index lists is missing or differs in the store", metadata: ["layer": "\(l.name)"])
                continue
            }
            present[l.name] = l.crc32c
        }
        state.withLock { s in
            s.stored = present
            s.verified.formIntersection(present.keys)
            s.superseded = Set(generations.filter { $0 < generation })
            s.listed = Set(base?.layers.map(\.name) ?? [])
            s.progress.remoteConsistentLsn = base.map { Lsn($0.diskConsistentLsn) }
            // Left by a crash: uploaded and never indexed, or listed by an index since replaced.
            for key in keys {
                guard let name = key.split(separator: "/").last.map(String.init),
                      let layer = LayerName(parsing: name), layer.generation <= generation, !s.listed.contains(name)
                else { continue }
                s.doomed.insert(name)
            }
            s.learnedGeneration = generation
            s.indexed = nil
        }
        return nil
    }

    private func newerGeneration(than generation: UInt32) throws(RemoteError) -> UInt32? {
        Self.newest(try store.list(prefix: RemoteIndex.prefix(tenant)), above: generation)
    }

    private static func newest(_ keys: [String], above generation: UInt32) -> UInt32? {
        keys.compactMap(RemoteIndex.generation(ofKey:)).filter { $0 > generation }.max()
    }

    /// Stops all writes for the tenant, for good: recorded in the claim, so
    /// that no later load of this directory writes either.
    private func fence(_ newer: UInt32) -> Outcome {
        let claim = state.withLock { s -> RemoteClaim? in
            s.progress.fencedBy = newer
            s.learnedGeneration = nil  // every later pass learns again, and finds the fence
            guard s.claim.fencedBy == nil else { return nil }
            s.claim.fencedBy = newer
            return s.claim
        }
        if let claim {
            do throws(StorageError) { try claim.write(fs: fs, directory: directory) } catch {
                logger.error("could not record the fence; the next pass finds it again", metadata: ["error": "\(error)"])
            }
        }
        return .fenced(newer: newer)
    }

    /// Records the body this server is about to write as its index of
    /// `generation`, and that generation as claimed, before it writes.
    private func recordIndexWrite(_ bytes: [UInt8], generation: UInt32) throws(RemoteError) {
        let crc = Checksum.crc32c(bytes)
        try writeClaim { claim in
            if claim.claimed.map({ $0 < generation }) ?? true {
                claim.claimed = generation
                claim.indexCrcs = []
            }
            claim.indexCrcs = Array((claim.indexCrcs.filter { $0 != crc } + [crc]).suffix(RemoteClaim.maxIndexCrcs))
        }
    }

    /// Changes the claim and writes it down before anything it covers reaches
    /// the store. If the write fails, the next pass reads the claim from disk again.
    private func writeClaim(_ change: (inout RemoteClaim) -> Void) throws(RemoteError) {
        let claim = state.withLock { s -> RemoteClaim in
            change(&s.claim)
            return s.claim
        }
        do throws(StorageError) { try claim.write(fs: fs, directory: directory) } catch {
            state.withLock { $0.learnedGeneration = nil }
            throw .failed("record the remote claim", RemoteClaim.fileName, error, local: true)
        }
    }

    /// True when this server created its generation's index and the store now
    /// holds other bytes there: another server writes this generation (a store
    /// that lost the tenant and got it back, say). Nothing of ours goes over them.
    private func ownIndexIsForeign(_ generation: UInt32) throws(RemoteError) -> Bool {
        guard state.withLock({ $0.createdIndex == generation }) else { return false }
        let key = RemoteIndex.key(tenant, generation: generation)
        guard let there = try store.get(key, limit: RemoteIndex.maxBytes), isForeignIndex(there) else { return false }
        logger.error("the remote index of this server's generation holds bytes it did not write: uploads stopped", metadata: [
            "generation": "\(generation)", "key": "\(key)",
        ])
        return true
    }

    /// True when `bytes`, found as the index of this server's claimed generation, are not a body it wrote.
    private func isForeignIndex(_ bytes: [UInt8]) -> Bool {
        state.withLock { s in
            !s.claim.indexCrcs.isEmpty && !s.claim.indexCrcs.contains(Checksum.crc32c(bytes))
        }
    }
}
