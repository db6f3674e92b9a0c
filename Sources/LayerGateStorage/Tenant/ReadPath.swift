/// GetPage@LSN: the newest base (image or will_init delta) at or below the
/// LSN, then every later delta in LSN order, gathered from the open and
/// frozen in-memory layers and then the layer files.
enum ReadPath {
    private enum Step {
        case memory(RecordValue)
        case disk(LayerReader, IndexEntry)
    }

    /// `frozen` is oldest first, as the tenant keeps it. Returns nil when the
    /// key has no record at or below `lsn`. Reads the disk as needed.
    static func reconstruct(key: PageKey, lsn: Lsn, open: InMemoryLayer, frozen: [InMemoryLayer], layers: LayerMap)
        throws(StorageError) -> [UInt8]?
    {
        var found = false
        var failure: StorageError?
        let page = [UInt8](unsafeUninitializedCapacity: pageSize) { raw, count in
            count = pageSize
            do throws(StorageError) {
                found = try reconstruct(key: key, lsn: lsn, open: open, frozen: frozen, layers: layers,
                                        into: UnsafeMutableRawBufferPointer(raw))
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return found ? page : nil
    }

    /// The same, written into `page` (exactly `pageSize` bytes). False when
    /// the key has no record at or below `lsn` (`page` then holds nothing meaningful).
    static func reconstruct(key: PageKey, lsn: Lsn, open: InMemoryLayer, frozen: [InMemoryLayer], layers: LayerMap,
                            into page: UnsafeMutableRawBufferPointer) throws(StorageError) -> Bool {
        var share = ImageShare.never
        return try ReadFailure.onDisk { () throws(ReadFailure) in
            try reconstruct(key: key, lsn: lsn, open: open, frozen: frozen, layers: layers, into: page, share: &share, policy: .mayReadDisk)
        }
    }

    /// The same without waiting for the disk (the server builds the page
    /// straight into its answer on its event loop): nil when a block needs
    /// the disk, and then `miss` names the blocks when they are a layer file's.
    /// An in-memory image that is the whole page goes to `share` instead of
    /// into `page`, when `share` allows it.
    static func reconstructWithoutWaiting(key: PageKey, lsn: Lsn, open: InMemoryLayer, frozen: [InMemoryLayer], layers: LayerMap,
                                          into page: UnsafeMutableRawBufferPointer, miss: inout BlockMiss?,
                                          share: inout ImageShare) throws(StorageError) -> Bool? {
        do throws(ReadFailure) {
            return try reconstruct(key: key, lsn: lsn, open: open, frozen: frozen, layers: layers, into: page, share: &share,
                                   policy: .withoutWaiting)
        } catch {
            switch error {
            case .notCached(let blocks):
                miss = blocks
                return nil
            case .storage(let e): throw e
            }
        }
    }

    private static func reconstruct(key: PageKey, lsn: Lsn, open: InMemoryLayer, frozen: [InMemoryLayer], layers: LayerMap,
                                     into page: UnsafeMutableRawBufferPointer, share: inout ImageShare,
                                     policy: ReadPolicy) throws(ReadFailure) -> Bool {
        precondition(page.count == pageSize, "a page is \(pageSize) bytes")
        var pending: [Step] = []  // deltas above the base, newest first; empty (no allocation) for a plain image
        if try !gather(key: key, lsn: lsn, open: open, frozen: frozen, layers: layers, page: page, pending: &pending,
                       share: &share, policy: policy) {
            if pending.isEmpty { return false }
            // Deltas with no base below them start from a zero page.
            page.initializeMemory(as: UInt8.self, repeating: 0)
        }
        for step in pending.reversed() { try apply(step, to: page, policy: policy) }
        return true
    }

    private static func gather(
        key: PageKey, lsn: Lsn, open: InMemoryLayer, frozen: [InMemoryLayer], layers: LayerMap,
        page: UnsafeMutableRawBufferPointer, pending: inout [Step], share: inout ImageShare, policy: ReadPolicy
    ) throws(ReadFailure) -> Bool {
        // The open layer is passed as it is, not picked into a variable: that would retain and release it.
        if gatherMemory(key: key, lsn: lsn, in: open, page: page, pending: &pending, share: &share) { return true }
        for mem in frozen.reversed() where gatherMemory(key: key, lsn: lsn, in: mem, page: page, pending: &pending, share: &share) {
            return true
        }
        var cursor = lsn
        var based = false
        while !based {
            // The newest delta and the newest image that can hold (key, ≤ cursor).
            var delta: TenantLayer?
            var image: TenantLayer?
            for layer in layers.layers {
                let n = layer.descriptor.name
                guard n.lsnStart <= cursor, n.keys.contains(key) else { continue }
                if n.kind == .image {
                    if image == nil || n.lsnStart > image!.descriptor.name.lsnStart { image = layer }
                } else if delta == nil {
                    delta = layer  // layers are sorted by end LSN, so the first is the newest
                }
                if delta != nil && image != nil { break }
            }
            let imageLsn = image?.descriptor.name.lsnStart
            if let image, let imageLsn,
               delta == nil || imageLsn >= min(delta!.descriptor.name.lsnEnd, cursor) {
                let file = try image.reader(policy: policy)
                try file.visit(key: key, upTo: cursor, policy: policy) { e throws(ReadFailure) in
                    try apply(.disk(file, e), to: page, policy: policy)
                    based = true
                    return false
                }
                guard imageLsn.rawValue > 0 else { break }
                cursor = imageLsn.previous
            } else if let delta {
                let start = delta.descriptor.name.lsnStart
                // Below an image inside this delta's range, the image serves: stop there.
                let lowerExclusive = imageLsn.map { $0 >= start ? $0 : start.previous } ?? start.previous
                let file = try delta.reader(policy: policy)
                try file.visit(key: key, upTo: cursor, policy: policy) { e throws(ReadFailure) in
                    guard e.lsn > lowerExclusive else { return false }
                    if e.isBase {
                        try apply(.disk(file, e), to: page, policy: policy)
                        based = true
                        return false
                    }
                    pending.append(.disk(file, e))
                    return true
                }
                guard !based, lowerExclusive < cursor else { break }
                cursor = lowerExclusive
            } else {
                break
            }
        }
        return based
    }

    /// Gathers from one in-memory layer: true once a base is applied to `page`,
    /// or handed to `share` (an image with no delta above it, where allowed).
    private static func gatherMemory(key: PageKey, lsn: Lsn, in mem: InMemoryLayer, page: UnsafeMutableRawBufferPointer,
                                     pending: inout [Step], share: inout ImageShare) -> Bool {
        mem.withVersions(of: key) { versions -> Bool in
            guard let versions else { return false }
            for v in versions.reversed() where v.lsn <= lsn {
                if v.value.isBase {
                    if share.allowed, pending.isEmpty, case .image(let bytes) = v.value, bytes.count == pageSize {
                        share.image = bytes
                        return true
                    }
                    applyMemory(v.value, to: page)
                    return true
                }
                pending.append(.memory(v.value))
            }
            return false
        }
    }

    private static func applyMemory(_ value: RecordValue, to page: UnsafeMutableRawBufferPointer) {
        switch value {
        case .image(let bytes):
            bytes.withUnsafeBytes { page.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: pageSize) }
        case .delta(let d):
            Redo.apply(d, to: page)
        }
    }

    private static func apply(_ step: Step, to page: UnsafeMutableRawBufferPointer, policy: ReadPolicy) throws(ReadFailure) {
        switch step {
        case .memory(let value):
            applyMemory(value, to: page)
        case .disk(let layer, let e):
            if e.isImage {
                try layer.readPayload(e, into: page, policy: policy)
            } else {
                let length = try ReadFailure.lift { () throws(StorageError) in try layer.payloadLength(of: e) }
                let ok = try withUnsafeTemporaryAllocation(byteCount: max(1, length), alignment: 8) {
                    scratch throws(ReadFailure) -> Bool in
                    let payload = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<length])
                    try layer.readPayload(e, into: payload, policy: policy)
                    return Redo.applyEncoded(UnsafeRawBufferPointer(payload), to: page)
                }
                guard ok else {
                    throw .storage(.corruptLayer(file: layer.path, reason: "undecodable delta for \(e.key) at \(e.lsn)"))
                }
            }
        }
    }
}
