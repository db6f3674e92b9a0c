#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Writes one delta or image layer to a `*.___temp` file and publishes it
/// through the gate. Delta and image layers share every step, and every
/// failure — a write error, a failpoint, a taken name, cancellation, or a
/// writer simply dropped — goes through `discard()`, which removes the temp
/// file. So no failure leaves a temp or half-published file behind.
public final class LayerWriter {
    public let directory: DirectoryHandle
    public let kind: LayerName.Kind
    let tenant: TenantId
    let lsnStart: Lsn
    let lsnEnd: Lsn
    let generation: UInt32
    /// `LayerFormat.Version.written`; the tests write version 1 files too, to read them back.
    let version: LayerFormat.Version
    private let failpoints: Failpoints
    private let mechanism: GatedPublish.Mechanism

    let tempName: String
    /// The temp file, written past the OS page cache where it can be; nil once closed.
    private var out: DirectWrites?
    /// Bytes not yet written, from `bufferStart`; flushed at 1 MiB.
    private let buffer = AlignedBuffer(capacity: 1 << 20 + 64 << 10)
    private var bufferStart = LayerFormat.blockSize
    private var entries: [IndexEntry] = []
    private var lastKey: (PageKey, Lsn)?
    private var done = false

    private static let tempCounter = Atomic<UInt64>(0)

    /// Values written out to the file so far (the rest is in the buffer).
    var dataOnDisk: Int { bufferStart - LayerFormat.blockSize }

    /// The most one value adds to a file: its payload (at most its encoded
    /// size), the padding an image may get before it, its index entry, and
    /// its share of an index block's unused end (under 1 byte: 194 entries of
    /// 42 to a block) and of the fences (25 bytes a block). A file adds
    /// `DiskBudget.layerFileEnd` to the sum. The disk budget's bounds rest on it.
    static func diskBound(of value: RecordValue) -> Int {
        var bound = ValueCodec.encodedSize(value) + LayerFormat.Version.written.entrySize + 2
        if case .image = value { bound += LayerFormat.imageAlignmentSlack }
        return bound
    }

    /// Creates the temp file. For an image layer `lsnStart == lsnEnd`, the image LSN.
    public convenience init(
        directory: DirectoryHandle, tenant: TenantId, kind: LayerName.Kind, lsnStart: Lsn, lsnEnd: Lsn, generation: UInt32,
        failpoints: Failpoints = .shared
    ) throws(StorageError) {
        try self.init(directory: directory, tenant: tenant, kind: kind, lsnStart: lsnStart, lsnEnd: lsnEnd,
                      generation: generation, failpoints: failpoints, mechanism: .automatic, version: .written)
    }

    init(
        directory: DirectoryHandle, tenant: TenantId, kind: LayerName.Kind, lsnStart: Lsn, lsnEnd: Lsn, generation: UInt32,
        failpoints: Failpoints, mechanism: GatedPublish.Mechanism, version: LayerFormat.Version
    ) throws(StorageError) {
        precondition(lsnStart <= lsnEnd && (kind == .delta || lsnStart == lsnEnd), "bad layer LSN range")
        self.directory = directory
        self.kind = kind
        self.tenant = tenant
        self.lsnStart = lsnStart
        self.lsnEnd = lsnEnd
        self.generation = generation
        self.failpoints = failpoints
        self.mechanism = mechanism
        self.version = version
        var name = ""
        var created: RawFile?
        while created == nil {
            let n = Self.tempCounter.add(1, ordering: .relaxed).newValue
            name = "layer-\(getpid())-\(n).___temp"
            do {
                created = try RawFile.open(directory.fs, directory.child(name), .createExclusive)
            } catch .io(_, _, let e) where e == EEXIST {
                continue  // left by an earlier process with the same pid; swept at load
            }
        }
        tempName = name
        out = created.map { DirectWrites(file: $0) }
    }

    deinit { if !done { discard() } }

    public var valueCount: Int { entries.count }

    /// Appends the value of (key, lsn). Calls must come in strictly increasing
    /// (key, lsn) order; image layers take images at `lsnStart` only.
    public func append(key: PageKey, lsn: Lsn, value: RecordValue) throws(StorageError) {
        do throws(StorageError) {
            precondition(!done, "append after finish")
            if let (k, l) = lastKey { precondition((k, l.rawValue) < (key, lsn.rawValue), "layer values out of order") }
            precondition(lsn >= lsnStart && lsn <= lsnEnd, "value LSN \(lsn) outside layer range")
            try failpoints.hit("layer-writer-put-value")
            if Task.isCancelled { throw StorageError.cancelled("layer write to \(FileLabel.describe(directory.path))") }
            var flags: UInt8 = value.isBase ? LayerFormat.flagBase : 0
            let payloadSize: Int
            switch value {
            case .image(let bytes):
                precondition(bytes.count == pageSize)
                flags |= LayerFormat.flagImage
                payloadSize = bytes.count
            case .delta:
                precondition(kind == .delta, "image layers hold images only")
                payloadSize = ValueCodec.encodedSize(value)
            }
            let bs = LayerFormat.blockSize
            let inBlock = (bufferStart + buffer.count) % bs
            if version == .v1 {
                // Keep the 8-byte blob header inside one block.
                if bs - inBlock < BlobHeader.size { buffer.appendZeros(bs - inBlock) }
            } else if case .image = value, inBlock != 0, bs - inBlock <= LayerFormat.imageAlignmentSlack {
                buffer.appendZeros(bs - inBlock)  // one block to read for this image, not two
            }
            let offset = bufferStart + buffer.count
            let crc: UInt32
            switch value {
            case .image(let bytes):
                crc = appendPayload(size: payloadSize) { to in bytes.withUnsafeBytes { to.copyMemory(from: $0) } }
            case .delta:
                var encoded = ByteWriter(capacity: payloadSize)
                ValueCodec.encode(value, into: &encoded)
                precondition(encoded.count == payloadSize, "a delta's encoded size is what encodedSize said")
                crc = appendPayload(size: payloadSize) { to in encoded.bytes.withUnsafeBytes { to.copyMemory(from: $0) } }
            }
            entries.append(IndexEntry(key: key, lsn: lsn, offset: UInt64(offset),
                                      length: UInt32(version.blobHeaderSize + payloadSize), flags: flags, crc: crc))
            lastKey = (key, lsn)
            if buffer.count >= 1 << 20 { try flushBuffer() }
        } catch {
            discard()
            throw error
        }
    }

    /// Appends `size` bytes of payload that `fill` writes in place, in this
    /// file's version's form; their CRC-32C, for the index entry (version 2).
    private func appendPayload(size: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void) -> UInt32 {
        if version == .v1 {
            BlobHeader.append(payloadLength: size, to: buffer, fill)
            return 0
        }
        var crc: UInt32 = 0
        buffer.append(size) { payload in
            fill(payload)
            crc = Checksum.crc32c(UnsafeRawBufferPointer(payload))
        }
        return crc
    }

    /// Writes index, fences and summary, fsyncs, publishes through the gate and
    /// fsyncs the directory. On any failure the temp file is gone when this throws.
    public func finish() throws(StorageError) -> LayerDescriptor {
        precondition(!done, "finish twice")
        precondition(!entries.isEmpty, "an empty layer is never written")
        do throws(StorageError) {
            try failpoints.hit("layer-writer-before-finish")
            if Task.isCancelled { throw StorageError.cancelled("layer write to \(FileLabel.describe(directory.path))") }
            let name = LayerName(kind: kind, keys: KeyRange(first: entries.first!.key, last: entries.last!.key),
                                 lsnStart: lsnStart, lsnEnd: lsnEnd, generation: generation)
            let dataEnd = bufferStart + buffer.count
            buffer.appendZeros((LayerFormat.blockSize - dataEnd % LayerFormat.blockSize) % LayerFormat.blockSize)
            let indexStart = (bufferStart + buffer.count) / LayerFormat.blockSize
            var fences = ByteWriter()
            var blocks = 0
            let perBlock = version.entriesPerIndexBlock
            for chunkStart in stride(from: 0, to: entries.count, by: perBlock) {
                let chunk = entries[chunkStart..<min(chunkStart + perBlock, entries.count)]
                buffer.append(IndexBlock.encode(chunk, version: version))
                chunk.first!.key.write(to: &fences)
                fences.u64(chunk.first!.lsn.rawValue)
                blocks += 1
                if buffer.count >= 1 << 20 { try flushBuffer() }
            }
            let fenceStart = (bufferStart + buffer.count) / LayerFormat.blockSize
            let fenceArea = FenceArea.encode(fences.bytes, count: blocks)
            buffer.append(fenceArea)
            let fileSize = bufferStart + buffer.count
            try flushBuffer()
            precondition(buffer.count == 0, "a layer file that is not whole 8 KiB blocks")
            let summary = LayerSummary(
                version: version, kind: kind, tenant: tenant, keys: name.keys, lsnStart: lsnStart, lsnEnd: lsnEnd,
                valueCount: UInt64(entries.count), dataEnd: UInt64(dataEnd), indexStartBlock: UInt64(indexStart),
                indexBlockCount: UInt64(blocks), fenceStartBlock: UInt64(fenceStart),
                fenceBlockCount: UInt64(fenceArea.count / LayerFormat.blockSize), fileSize: UInt64(fileSize))
            guard let out else { throw StorageError.cancelled("layer writer already discarded") }
            // The summary block (a whole block) goes out last, from the now empty aligned buffer.
            buffer.append(summary.encode())
            try buffer.withBytes(0..<LayerFormat.blockSize) { (b) throws(StorageError) in try out.write(b, at: 0) }
            buffer.removeFirst(LayerFormat.blockSize)
            out.file.sync()
            out.file.close()
            try failpoints.hit("layer-writer-before-publish")
            try GatedPublish.publish(directory: directory, temp: tempName, final: name.description, mechanism: mechanism)
            done = true
            self.out = nil
            return LayerDescriptor(name: name, size: fileSize)
        } catch {
            discard()
            throw error
        }
    }

    /// Abandons the layer: closes and removes the temp file. Idempotent.
    public func discard() {
        guard !done else { return }
        done = true
        out?.file.close()
        out = nil
        try? directory.fs.unlink(directory.child(tempName))
    }

    /// Writes what can go out now: with direct I/O, whole aligned units (the
    /// rest stays for the next flush; the finished file is whole blocks).
    private func flushBuffer() throws(StorageError) {
        guard let out else { throw StorageError.cancelled("layer writer already discarded") }
        let n = out.writable(buffer.count)
        guard n > 0 else { return }
        try buffer.withBytes(0..<n) { (b) throws(StorageError) in try out.write(b, at: bufferStart) }
        bufferStart += n
        buffer.removeFirst(n)
    }
}
