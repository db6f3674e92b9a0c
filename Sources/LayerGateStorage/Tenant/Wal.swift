#if canImport(Glibc)
import Glibc
#endif
import Metrics
import Synchronization

/// A tenant's ingest log: `wal/<first-lsn>.wal` segments in `WalFormat`.
///
/// Appends come only from the tenant's single commit leader; truncation of
/// old segments from the flush. A new segment starts after each freeze, so a
/// segment can be deleted once the next one starts at or below
/// disk_consistent_lsn + 1.
///
/// A failed append leaves nothing a replay could find and changes nothing the
/// next append relies on: a commit that fails is cut back (truncate + fsync);
/// a new segment whose first commit fails is removed again, and the roll is
/// retried by the next append, which names the segment after its own first
/// LSN. So a segment's name is always the LSN of its first record.
final class Wal: Sendable {
    let directory: DirectoryHandle
    let tenant: TenantId

    private struct Current {
        /// The segment's file; `log.end` is where the next frame goes.
        var log: AppendOnlyFile
        var segment: WalReplay.Segment
        var nextSequence: UInt64
        var lastLsn: Lsn
    }

    private struct State {
        var segments: [WalReplay.Segment]
        /// The segment appends go to; unsealed.
        var current: Current?
        /// The newest segment of the last load, if it was not sealed: sealed
        /// (opened then) before the first new segment starts.
        var unsealedTail: WalReplay.OpenTail?
        var rollRequested = true
        /// The newest segment ever written, even if deleted since: the next
        /// segment's header names it.
        var newest: WalReplay.Segment?
    }

    private let state: Mutex<State>
    /// fsyncs done, to check that concurrent puts share them.
    let syncCount = Atomic<Int>(0)
    private let fsyncTime: Timer

    init(directory: DirectoryHandle, tenant: TenantId, replayed: WalReplay.Result,
         fsyncTime: Timer = StorageMetrics.unexported.walFsync) {
        self.directory = directory
        self.tenant = tenant
        self.fsyncTime = fsyncTime
        state = Mutex(State(segments: replayed.segments, unsealedTail: replayed.tail, newest: replayed.segments.last))
    }

    static func segmentName(_ start: Lsn) -> String { start.hex16 + ".wal" }

    /// The most one `append` of `parts` grows the log on disk: its frame, the
    /// padding to the direct-write alignment after it, and a roll (the old
    /// segment's seal and the new one's header, each padded). The disk budget
    /// admits ingest by it.
    static func growthBound(parts: [[UInt8]]) -> Int {
        WalFormat.frameSize(parts: parts) + 3 * directIOAlignment
            + 2 * WalFormat.frameHeaderSize + WalFormat.headerPayloadSize + WalFormat.sealPayloadSize
    }

    /// The next append starts a new segment (called at freeze).
    func requestRoll() { state.withLock { $0.rollRequested = true } }

    /// Appends one group commit, whose records are `parts` (each encoded by
    /// `WalFormat.encodeRecords`, in LSN order, LSNs `firstLsn…lastLsn`), and
    /// fsyncs it. Returns once it is durable.
    func append(_ parts: [[UInt8]], firstLsn: Lsn, lastLsn: Lsn, failpoints: Failpoints) throws(StorageError) {
        let (rollNeeded, current) = state.withLock { s in (s.rollRequested || s.current == nil, s.current) }
        if !rollNeeded, let current {
            try write(WalFormat.frameSize(parts: parts), to: current.log, failpoints: failpoints) { out in
                WalFormat.writeFrame(.commit, sequence: current.nextSequence, parts: parts, into: out)
            }
            state.withLock { s in
                s.current?.nextSequence += 1
                s.current?.lastLsn = lastLsn
                s.newest?.lastLsn = lastLsn
            }
            return
        }
        try sealOpenSegment()
        try startSegment(with: parts, firstLsn: firstLsn, lastLsn: lastLsn, failpoints: failpoints)
    }

    /// Appends `count` bytes of frames, written by `fill`, and fsyncs; on
    /// failure the file is cut back to where it ended (and that is fsynced)
    /// before the error is thrown.
    private func write(_ count: Int, to log: AppendOnlyFile, failpoints: Failpoints, sealing: Bool = false,
                       _ fill: (UnsafeMutableRawBufferPointer) -> Void) throws(StorageError) {
        let file = log.file
        let offset = log.end
        do throws(StorageError) {
            // Nothing follows a seal: zeros after it. After a commit, padding that a zeroed commit cannot pass for.
            try log.append(count, padding: sealing ? [0] : WalFormat.blockPadding, fill)
            try failpoints.hit("wal-before-fsync")
        } catch {
            do throws(StorageError) { try log.cutBack(to: offset) } catch let e {
                FatalIO.stop("cannot cut \(FileLabel.describe(file.path)) back after a failed write (\(error)): \(e)")
            }
            file.sync()
            throw error
        }
        do throws(StorageError) { try failpoints.hit("wal-fsync-error") } catch {
            FatalIO.stop("fsync of \(FileLabel.describe(file.path)) failed: failpoint wal-fsync-error")
        }
        let start = ContinuousClock.now
        file.sync()
        fsyncTime.record(duration: .now - start)
        syncCount.add(1, ordering: .relaxed)
    }

    /// Seals the segment that appends went to (or the unsealed newest segment
    /// of the last load), so that a replay can tell any damage in it from a torn write.
    private func sealOpenSegment() throws(StorageError) {
        let (current, tail) = state.withLock { s in (s.current, s.unsealedTail) }
        if let current {
            try seal(current.log, nextSequence: current.nextSequence, lastLsn: current.lastLsn)
            current.log.file.close()
        } else if let tail {
            let file = try RawFile.open(directory.fs, directory.child(tail.segment.name), .readWrite)
            defer { file.close() }
            try seal(try AppendOnlyFile(file: file, end: tail.size), nextSequence: tail.nextSequence, lastLsn: tail.lastLsn)
        }
        state.withLock { s in
            s.current = nil
            s.unsealedTail = nil
        }
    }

    private func seal(_ log: AppendOnlyFile, nextSequence: UInt64, lastLsn: Lsn) throws(StorageError) {
        let seal = WalFormat.Seal(offset: UInt64(log.end), lastLsn: lastLsn, commits: nextSequence - 1)
        let parts = [WalFormat.sealPayload(seal)]
        try write(WalFormat.frameSize(parts: parts), to: log, failpoints: Failpoints.none, sealing: true) { out in
            WalFormat.writeFrame(.seal, sequence: nextSequence, parts: parts, into: out)
        }
    }

    private func startSegment(with parts: [[UInt8]], firstLsn: Lsn, lastLsn: Lsn, failpoints: Failpoints)
        throws(StorageError)
    {
        let fs = directory.fs
        let name = Self.segmentName(firstLsn)
        let path = directory.child(name)
        let previous = state.withLock { $0.newest }
        let file: RawFile
        do throws(StorageError) {
            file = try RawFile.open(fs, path, .createExclusive)
        } catch .io(_, _, let e) where e == EEXIST {
            // Only an empty file can hold this name: one whose first commit failed
            // and whose removal failed too. Anything else is not ours to overwrite.
            guard Directory.fileSize(fs, path) == 0 else {
                throw .corruptWal(file: path, reason: "a new segment's name is taken by a non-empty file")
            }
            file = try RawFile.open(fs, path, .readWrite)
        }
        directory.sync()
        let header = WalFormat.SegmentHeader(startLsn: firstLsn, previousStart: previous?.start ?? .zero,
                                             previousLastLsn: previous?.lastLsn ?? .zero, tenant: tenant)
        let headerParts = [WalFormat.headerPayload(header)]
        let headerSize = WalFormat.frameSize(parts: headerParts)
        let log: AppendOnlyFile
        do throws(StorageError) {
            log = try AppendOnlyFile(file: file, end: 0)
            try write(headerSize + WalFormat.frameSize(parts: parts), to: log, failpoints: failpoints) { out in
                WalFormat.writeFrame(.segmentHeader, sequence: 0, parts: headerParts, into: .init(rebasing: out[..<headerSize]))
                WalFormat.writeFrame(.commit, sequence: 1, parts: parts, into: .init(rebasing: out[headerSize...]))
            }
        } catch {
            file.close()
            try? fs.unlink(path)
            directory.sync()
            throw error
        }
        let segment = WalReplay.Segment(start: firstLsn, name: name, legacy: false, lastLsn: lastLsn)
        state.withLock { s in
            if s.segments.last?.name != name { s.segments.append(segment) }
            s.newest = segment
            s.current = Current(log: log, segment: segment, nextSequence: 2, lastLsn: lastLsn)
            s.rollRequested = false
        }
    }

    /// Deletes the segments whose every record is ≤ `diskConsistentLsn`: the
    /// older, sealed ones, and the newest too once all of it is flushed (it
    /// is closed; the next append starts a new segment). Called by the commit
    /// leader only, so no append runs meanwhile. A segment that cannot be
    /// deleted now stays listed, and the next flush tries again.
    func retire(coveredBy diskConsistentLsn: Lsn) throws(StorageError) {
        let covered = diskConsistentLsn.rawValue &+ 1
        let (doomed, newest) = state.withLock { s -> ([String], WalReplay.Segment?) in
            var out: [String] = []
            var i = 0
            while i + 1 < s.segments.count, s.segments[i + 1].start.rawValue <= covered {
                out.append(s.segments[i].name)
                i += 1
            }
            // The newest segment too (open, unsealed or sealed) once every record in it is flushed.
            var newest: WalReplay.Segment?
            if i + 1 == s.segments.count, let last = s.segments.last, let n = s.newest, n.name == last.name,
               n.lastLsn <= diskConsistentLsn {
                newest = last
            }
            return (out, newest)
        }
        var removed = 0
        var failure: StorageError?
        for name in doomed {
            do throws(StorageError) { try Directory.unlink(directory.fs, directory.child(name)) } catch {
                failure = error
                break
            }
            removed += 1
        }
        var newestRemoved = false
        if failure == nil, let newest {
            let file = state.withLock { s -> RawFile? in
                defer { s.current = nil; s.unsealedTail = nil; s.rollRequested = true }
                return s.current?.segment.name == newest.name ? s.current?.log.file : nil
            }
            file?.close()
            do throws(StorageError) {
                try Directory.unlink(directory.fs, directory.child(newest.name))
                newestRemoved = true
            } catch {
                failure = error
            }
        }
        state.withLock { s in
            s.segments.removeFirst(removed)
            if newestRemoved, let newest, s.segments.last?.name == newest.name { s.segments.removeLast() }
        }
        if removed > 0 || newestRemoved { directory.sync() }
        if let failure { throw failure }
    }

    var segmentCount: Int { state.withLock { $0.segments.count } }

    /// Seals the open segment and closes it. If the seal cannot be written (a
    /// full disk), the segment is remembered as unsealed and sealed before the
    /// next segment starts, as after a load.
    func close() {
        let current = state.withLock { s -> Current? in
            defer { s.current = nil; s.rollRequested = true }
            return s.current
        }
        guard let current else { return }
        do throws(StorageError) {
            try seal(current.log, nextSequence: current.nextSequence, lastLsn: current.lastLsn)
        } catch {
            state.withLock { s in
                s.unsealedTail = WalReplay.OpenTail(segment: current.segment, size: current.log.end,
                                                    nextSequence: current.nextSequence, lastLsn: current.lastLsn)
            }
        }
        current.log.file.close()
    }
}
