/// The operator's way out when a tenant's `index.json` is damaged (the atomic
/// replace cannot tear it, a bad disk can): a new index from the layer files'
/// own summaries, written offline while no server holds the data directory.
///
/// What it keeps:
/// - every layer file that validates (summary, fences, every index block and
///   value); a file that does not is renamed `<name>.damaged` and left out;
/// - delta layers all (overlapping ones, such as the inputs and outputs of a
///   compaction that crashed before its commit, read correctly: a read takes
///   the newest delta covering an LSN, and compaction skips duplicates);
/// - an image set at LSN L only if it is complete: every key that has a
///   version at or below L in any kept layer has an image at L (GC trusts
///   an image set to stand for all history below it; a partial set from a
///   crashed compaction must not).
///
/// The new index: disk_consistent_lsn is the newest LSN the kept layers
/// cover (the WAL replays what is above it); gc_cutoff_lsn is 0 when the
/// deltas hold every LSN from the first, else the oldest complete image set
/// above the newest LSN no layer holds (GC removed history below it, or a
/// damaged file did); the generation is the highest any layer name carries,
/// so new names never collide. The old index is kept as `index.json.damaged`.
///
/// It refuses, and writes nothing, when what is left cannot be served
/// correctly: LSNs that no valid layer holds with no complete image set above
/// them (a damaged layer in the middle of the history), or a WAL that starts
/// after where the layers end.
public enum IndexRebuild {
    public struct Report: Sendable {
        public var deltaLayers: [String] = []
        public var imageLayers: [String] = []
        /// File name and why it failed validation (renamed `.damaged`).
        public var damaged: [(name: String, reason: String)] = []
        /// Image layers of incomplete sets, left out (the next load sweeps them).
        public var incompleteImages: [String] = []
        public var diskConsistentLsn: Lsn = .zero
        public var gcCutoffLsn: Lsn = .zero
        public var generation: UInt32 = 0
        public var written = false
        /// Why nothing was written, when the layers cannot be served correctly.
        public var refusal: String?
    }

    /// Rebuilds `tenants/<tenant>/index.json` under `dataDirectory`. With
    /// `dryRun`, only reports what it would do.
    public static func run(dataDirectory: String, tenant: TenantId, dryRun: Bool) throws(StorageError) -> Report {
        let lock = try DataDirectoryLock(directory: dataDirectory)
        defer { lock.release() }
        let fs: RealFileSystem
        do throws(SystemError) { fs = try RealFileSystem(root: dataDirectory) } catch {
            throw .io(operation: "open data directory", path: "", errno: error.errno)
        }
        let dir = try DirectoryHandle(fs: fs, path: TenantManager.tenantsDirectoryName + "/" + tenant.description)
        let cache = PageCache(capacity: 64)
        let files = OpenFileTable(fs: fs, capacity: 16)
        var report = Report()
        var readers: [LayerReader] = []
        /// What each damaged file held, as far as its own index still says.
        var damagedEntries: [String: [IndexEntry]] = [:]
        for name in try Directory.list(fs, dir.path) {
            guard let layerName = LayerName(parsing: name) else { continue }
            var reader: LayerReader?
            do throws(StorageError) {
                let opened = try LayerReader(directory: dir, name: layerName, tenant: tenant, cache: cache, openFiles: files)
                reader = opened
                let scan = LayerScan(opened, inputs: 1)
                for e in try opened.allEntries() { _ = try scan.value(of: e) }
                readers.append(opened)
            } catch {
                report.damaged.append((name, "\(error)"))
                damagedEntries[name] = try? reader?.allEntries()
            }
        }
        // Keys with a version at or below each image LSN, from the deltas and from older images.
        let imageLsns = Set(readers.filter { $0.descriptor.name.kind == .image }.map(\.descriptor.name.lsnStart))
        var complete: Set<Lsn> = []
        for lsn in imageLsns {
            var needed: Set<PageKey> = []
            var covered: Set<PageKey> = []
            for r in readers {
                let n = r.descriptor.name
                guard n.lsnStart <= lsn else { continue }
                for e in try r.allEntries() where e.lsn <= lsn {
                    if n.kind == .image && n.lsnStart == lsn { covered.insert(e.key) } else { needed.insert(e.key) }
                }
            }
            if needed.isSubset(of: covered) { complete.insert(lsn) }
        }
        var index = IndexFile(tenant: tenant)
        for r in readers {
            let n = r.descriptor.name
            if n.kind == .image && !complete.contains(n.lsnStart) {
                report.incompleteImages.append(r.descriptor.fileName)
                continue
            }
            if n.kind == .image { report.imageLayers.append(r.descriptor.fileName) } else { report.deltaLayers.append(r.descriptor.fileName) }
            index.layers.append(IndexFile.Layer(name: r.descriptor.fileName, size: r.descriptor.size, level: 0))
            index.diskConsistentLsn = max(index.diskConsistentLsn, n.lsnEnd.rawValue)
            index.generation = max(index.generation, n.generation)
        }
        let deltaRanges = readers.map(\.descriptor.name).filter { $0.kind == .delta }.map { ($0.lsnStart, $0.lsnEnd) }
        let dcl = Lsn(index.diskConsistentLsn)
        if let hole = highestUncovered(below: dcl, deltas: deltaRanges, images: complete) {
            if let base = complete.filter({ $0 > hole }).min() {
                index.gcCutoffLsn = base.rawValue
            } else {
                report.refusal = "LSN \(hole) and below are in no valid layer (\(report.damaged.isEmpty ? "deleted" : "damaged: " + report.damaged.map(\.name).joined(separator: ", "))) and no complete image set is above them: reads would return wrong pages. Restore the missing or damaged layer files from a backup, or index.json itself"
            }
        }
        // A damaged file is dropped only if the valid layers hold everything it held.
        let validDeltas = readers.map(\.descriptor.name).filter { $0.kind == .delta }
        for (file, _) in report.damaged where report.refusal == nil {
            guard let name = LayerName(parsing: file) else { continue }
            let covered: Bool
            if let entries = damagedEntries[file] ?? nil {
                covered = entries.allSatisfy { e in
                    validDeltas.contains { $0.keys.contains(e.key) && $0.lsnStart <= e.lsn && e.lsn <= $0.lsnEnd }
                }
            } else {
                covered = isCovered(name, by: validDeltas)
            }
            if !covered {
                report.refusal = "the damaged layer \(file) (LSNs \(name.lsnStart)–\(name.lsnEnd)) holds records no other layer holds: reads would return wrong pages. Restore it from a backup, or index.json itself"
            }
        }
        let walDir = dir.child(Tenant.walDirectoryName)
        if Directory.isDirectory(fs, walDir), let gone = try WalReplay.deletedPredecessorLastLsn(fs: fs, directory: walDir),
           gone > dcl {
            report.refusal = report.refusal ?? "the WAL starts after LSN \(gone), but the valid layers end at \(dcl): the records between are gone. Restore the missing or damaged layer files from a backup, or index.json itself"
        }
        report.diskConsistentLsn = dcl
        report.gcCutoffLsn = Lsn(index.gcCutoffLsn)
        report.generation = index.generation
        guard !dryRun, report.refusal == nil else { return report }
        for (name, _) in report.damaged {
            do throws(SystemError) { try fs.rename(dir.child(name), dir.child(name + ".damaged")) } catch {
                throw .io(operation: "rename", path: dir.child(name), errno: error.errno)
            }
        }
        if Directory.exists(fs, dir.child(IndexFile.fileName)) {
            do throws(SystemError) { try fs.rename(dir.child(IndexFile.fileName), dir.child(IndexFile.fileName + ".damaged")) } catch {
                throw .io(operation: "rename", path: dir.child(IndexFile.fileName), errno: error.errno)
            }
        }
        try index.write(directory: dir, failpoints: Failpoints.none)
        report.written = true
        return report
    }

    /// The newest LSN in 1…`top` that no delta range and no complete image
    /// set covers, or nil when every one is covered.
    static func highestUncovered(below top: Lsn, deltas: [(Lsn, Lsn)], images: Set<Lsn>) -> Lsn? {
        var cur = top
        while cur.rawValue >= 1 {
            if let d = deltas.filter({ $0.0 <= cur && cur <= $0.1 }).min(by: { $0.0 < $1.0 }) {
                cur = d.0.previous
                if d.0.rawValue == 0 { return nil }
            } else if images.contains(cur) {
                cur = cur.previous
            } else {
                return cur
            }
        }
        return nil
    }

    /// Whether the deltas cover `damaged`'s whole rectangle (its key range at
    /// each of its LSNs): used when its own index cannot say what it held.
    static func isCovered(_ damaged: LayerName, by deltas: [LayerName]) -> Bool {
        let relevant = deltas.filter { $0.lsnStart <= damaged.lsnEnd && $0.lsnEnd >= damaged.lsnStart }
        var cuts = Set([damaged.lsnStart])
        for d in relevant {
            if d.lsnStart > damaged.lsnStart { cuts.insert(d.lsnStart) }
            if d.lsnEnd < damaged.lsnEnd { cuts.insert(d.lsnEnd.next) }
        }
        for at in cuts {
            let ranges = relevant.filter { $0.lsnStart <= at && at <= $0.lsnEnd }.map(\.keys).sorted { $0.first < $1.first }
            var next: PageKey? = damaged.keys.first
            for r in ranges {
                guard let want = next, r.first <= want else { continue }
                if r.last >= damaged.keys.last { next = nil; break }
                if r.last >= want { next = r.last.successor }
            }
            if next != nil { return false }
        }
        return true
    }
}
