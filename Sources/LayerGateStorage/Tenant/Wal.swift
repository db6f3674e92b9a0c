#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A tenant's ingest log: `wal/<first-lsn>.wal` segments of records
///
///     [u32 payload length][u32 crc32c(payload)][payload: lsn u64, key 17, value]
///
/// Appends come only from the tenant's single commit leader; truncation of
/// old segments from the flush. A new segment starts after each freeze, so a
/// segment can be deleted once the next one starts at or below
/// disk_consistent_lsn + 1.
final class Wal: Sendable {
    let directory: String

    private struct Segment {
        var start: Lsn
        var path: String
    }

    private struct State {
        var segments: [Segment] = []
        var current: RawFile?
        var currentSize = 0
        var rollRequested = true
    }

    private let state: Mutex<State>
    /// fsyncs done, to check that concurrent puts share them.
    let syncCount = Atomic<Int>(0)

    static let entryHeaderSize = 8

    init(directory: String, existing: [(Lsn, String)]) {
        self.directory = directory
        state = Mutex(State(segments: existing.map { Segment(start: $0.0, path: $0.1) }))
    }

    static func segmentName(_ start: Lsn) -> String { start.hex16 + ".wal" }

    static func encode(_ records: [Record]) -> [UInt8] {
        var w = ByteWriter(capacity: records.reduce(0) { $0 + 41 + ValueCodec.encodedSize($1.value) })
        for r in records {
            let headerAt = w.count
            w.u32(0); w.u32(0)
            let payloadAt = w.count
            w.u64(r.lsn.rawValue)
            r.key.write(to: &w)
            ValueCodec.encode(r.value, into: &w)
            let len = UInt32(w.count - payloadAt)
            let crc = w.bytes.withUnsafeBytes { Checksum.crc32c(UnsafeRawBufferPointer(rebasing: $0[payloadAt...])) }
            for i in 0..<4 {
                w.bytes[headerAt + i] = UInt8(truncatingIfNeeded: len >> UInt32(24 - 8 * i))
                w.bytes[headerAt + 4 + i] = UInt8(truncatingIfNeeded: crc >> UInt32(24 - 8 * i))
            }
        }
        return w.bytes
    }

    /// The next append starts a new segment (called at freeze).
    func requestRoll() { state.withLock { $0.rollRequested = true } }

    /// Appends `bytes` (records starting at `firstLsn`) and fsyncs. On a write
    /// error the segment is cut back to its previous length, so a failed batch
    /// leaves nothing a replay could find.
    func append(_ bytes: [UInt8], firstLsn: Lsn, failpoints: Failpoints) throws(StorageError) {
        let (needsRoll, current, size) = state.withLock { s in (s.rollRequested || s.current == nil, s.current, s.currentSize) }
        var file = current
        var at = size
        if needsRoll {
            let path = directory + "/" + Self.segmentName(firstLsn)
            let f = try RawFile.open(path, flags: O_WRONLY | O_CREAT)
            at = try f.size()
            Directory.fsync(directory)
            state.withLock { s in
                if s.segments.last?.path != path { s.segments.append(Segment(start: firstLsn, path: path)) }
                s.current = f
                s.currentSize = at
                s.rollRequested = false
            }
            file = f
        }
        guard let file else { preconditionFailure("WAL has no open segment") }
        do throws(StorageError) {
            try file.write(bytes, at: at)
            try failpoints.hit("wal-before-fsync")
        } catch {
            do throws(StorageError) { try file.truncate(to: at) } catch {
                FatalIO.fsyncFailed(path: file.path, errno: EIO)
            }
            throw error
        }
        do throws(StorageError) { try failpoints.hit("wal-fsync-error") } catch {
            FatalIO.fsyncFailed(path: file.path, errno: EIO)
        }
        file.sync()
        syncCount.add(1, ordering: .relaxed)
        state.withLock { $0.currentSize = at + bytes.count }
    }

    /// Deletes segments whose every record is ≤ `diskConsistentLsn`.
    func removeSegments(coveredBy diskConsistentLsn: Lsn) {
        let doomed: [String] = state.withLock { s in
            var out: [String] = []
            while s.segments.count >= 2, s.segments[1].start.rawValue <= diskConsistentLsn.rawValue &+ 1 {
                out.append(s.segments.removeFirst().path)
            }
            return out
        }
        for p in doomed { _ = unlink(p) }
        if !doomed.isEmpty { Directory.fsync(directory) }
    }

    var segmentCount: Int { state.withLock { $0.segments.count } }

    func close() { state.withLock { s in s.current?.close(); s.current = nil; s.rollRequested = true } }

    struct Replay {
        var records: [Record] = []
        var tornBytesCut = 0
        var segments: [(Lsn, String)] = []
    }

    /// Reads every segment in order. A torn tail of the last segment (a record
    /// cut short, zeros, or a bad checksum on its final record) is cut off;
    /// damage anywhere else is `corruptWal`.
    static func replay(directory: String) throws(StorageError) -> Replay {
        var out = Replay()
        let names = try Directory.list(directory)
        for name in names where name.hasSuffix("___temp") { _ = unlink(directory + "/" + name) }
        let segs: [(Lsn, String)] = names.compactMap { n in
            guard n.hasSuffix(".wal"), let v = Hex.parseUInt64(n.dropLast(4), digits: 16) else { return nil }
            return (Lsn(v), directory + "/" + n)
        }.sorted { $0.0 < $1.0 }
        out.segments = segs
        var lastLsn = Lsn.zero
        for (i, (_, path)) in segs.enumerated() {
            let isLast = i == segs.count - 1
            let file = try RawFile.open(path, flags: isLast ? O_RDWR : O_RDONLY)
            let bytes = try file.readAll()
            var pos = 0
            var cutAt: Int?
            let scan: Result<Void, StorageError> = bytes.withUnsafeBytes { (buf: UnsafeRawBufferPointer) in
                while pos < buf.count {
                    let rest = UnsafeRawBufferPointer(rebasing: buf[pos...])
                    let torn: String? = {
                        if rest.allSatisfy({ $0 == 0 }) { return "zeros" }
                        if rest.count < entryHeaderSize { return "short header" }
                        return nil
                    }()
                    if let torn {
                        guard isLast else { return .failure(.corruptWal(file: path, reason: "\(torn) at offset \(pos) of a sealed segment")) }
                        cutAt = pos
                        return .success(())
                    }
                    let len = Int(UInt32(bigEndian: rest.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
                    let crc = UInt32(bigEndian: rest.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                    let end = entryHeaderSize + len
                    if end > rest.count {
                        guard isLast else { return .failure(.corruptWal(file: path, reason: "record at offset \(pos) runs past the end")) }
                        cutAt = pos
                        return .success(())
                    }
                    let payload = UnsafeRawBufferPointer(rebasing: rest[entryHeaderSize..<end])
                    guard Checksum.crc32c(payload) == crc else {
                        if isLast && end == rest.count { cutAt = pos; return .success(()) }
                        return .failure(.corruptWal(file: path, reason: "checksum mismatch at offset \(pos) with valid data after it"))
                    }
                    var r = ByteReader(payload)
                    guard let lsn = try? r.u64(), let key = try? PageKey.read(from: &r),
                          let value = ValueCodec.decode(UnsafeRawBufferPointer(rebasing: payload[r.offset...]))
                    else { return .failure(.corruptWal(file: path, reason: "undecodable record at offset \(pos)")) }
                    guard lsn >= lastLsn.rawValue else {
                        return .failure(.corruptWal(file: path, reason: "LSN goes backwards at offset \(pos)"))
                    }
                    lastLsn = Lsn(lsn)
                    out.records.append(Record(key: key, lsn: Lsn(lsn), value: value))
                    pos += end
                }
                return .success(())
            }
            if case .failure(let e) = scan { throw e }
            if let cutAt {
                try file.truncate(to: cutAt)
                file.sync()
                out.tornBytesCut += bytes.count - cutAt
            }
        }
        return out
    }
}
