import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// The WAL written with O_DIRECT (`AppendOnlyFile`): each commit rewrites the
/// segment's partial last block and pads to a block boundary. The padding is
/// the end of the segment, not a torn write; more zeros than that still are;
/// a failed commit leaves the next one starting from the right bytes; and
/// a power loss anywhere keeps every acknowledged record.
@Suite("WAL written directly: padding, cut-backs, power loss")
struct WalDirectTests {

    /// Records whose commits end anywhere within a block: an image and a
    /// delta of `extra` bytes.
    func oddCommit(_ n: UInt64) -> [Record] {
        [image(key(UInt32(n)), 10 + 2 * n), delta(key(UInt32(n)), 11 + 2 * n, offset: Int(n) * 7, bytes: [UInt8](repeating: UInt8(n), count: 1 + Int(n) * 97 % 700))]
    }


    @Test func commitsArePaddedToABlockAndTheRestartTakesThePaddingAsTheEnd() async throws {
        var f = try await DiskFixture.open(SimulatedDisk(directIO: true))
        let t = try await f.manager.create(testTenant)
        for n in 0..<6 as Range<UInt64> { _ = try await t.put(oddCommit(n)) }
        let name = try #require(f.walSegments().first)
        let bytes = try f.readFile(walPath(name))
        let end = (walFrames(bytes).last?.upperBound ?? 0)
        #expect(bytes.count % directIOAlignment == 0 && bytes.count > end, "\(bytes.count) bytes, frames end at \(end)")
        #expect(bytes.withUnsafeBytes { WalFormat.isBlockPadding($0, from: end) })

        // A power loss: every commit was fsynced, so all of it is there and nothing is reported cut.
        f = try await f.afterPowerLoss()
        var t2 = try f.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().lastRecordLsn == Lsn(21))
        #expect(t2.status().walTailCuts == 0)
        // The next commit seals that segment (its partial block read back) and starts another.
        _ = try await t2.put(oddCommit(6))
        f = try await f.afterPowerLoss()
        t2 = try f.tenant()
        #expect(t2.status().walTailCuts == 0)
        #expect(t2.status().lastRecordLsn == Lsn(23))
        for n in 0...6 as ClosedRange<UInt64> {
            #expect(try await t2.getPage(key: key(UInt32(n)), lsn: Lsn(10 + 2 * n)).page == page(UInt64(n) << 32 | (10 + 2 * n)))
        }
        await f.manager.shutdown()
    }

    /// A device that takes O_DIRECT but refuses 4 KiB-aligned writes (16 KiB
    /// sectors): the first direct write of each segment falls back to the page
    /// cache, padding and all. That padding is cut off at once, so a shorter
    /// frame after it (a seal) leaves nothing behind, and the segment loads
    /// (an outside review found such a tenant broken after a restart:
    /// "bytes follow the seal").
    @Test func aDeviceThatRefusesDirectWritesLeavesSegmentsThatLoad() async throws {
        var f = try await DiskFixture.open(SimulatedDisk(directIO: true, directAlignment: 16384))
        let t = try await f.manager.create(testTenant)
        _ = try await t.put(oddCommit(0))
        for lsn in 20..<24 as Range<UInt64> { _ = try await t.put([delta(key(0), lsn, offset: 0, bytes: [1, 2, 3])]) }
        let name = try #require(f.walSegments().first)
        await f.manager.shutdown()  // seals the segment
        let bytes = try f.readFile(walPath(name))
        #expect(walFrames(bytes).last?.upperBound == bytes.count, "nothing after the seal: \(bytes.count) bytes")
        f = try await DiskFixture.open(f.disk, config: f.config)
        var t2 = try f.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().lastRecordLsn == Lsn(23))
        _ = try await t2.put([delta(key(0), 24, offset: 0, bytes: [4])])
        f = try await f.afterPowerLoss()
        t2 = try f.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().walTailCuts == 0)
        var want = page(10)
        want[0...2] = [4, 2, 3]
        #expect(try await t2.getPage(key: key(0), lsn: Lsn(24)).page == want)
        await f.manager.shutdown()
    }

    /// A sealed segment that an earlier build left with block padding after
    /// its seal (the fallback above, before its padding was cut) loads: the
    /// padding is dropped like zeros after a seal. Anything else there is still damage.
    @Test(arguments: [true, false])
    func blockPaddingAfterASealLoadsAndOtherBytesDoNot(padding: Bool) async throws {
        let f = try await DiskFixture.open(SimulatedDisk())
        let t = try await f.manager.create(testTenant)
        _ = try await t.put(oddCommit(0))
        let name = try #require(f.walSegments().first)
        await f.manager.shutdown()
        var bytes = try f.readFile(walPath(name))
        let end = try #require(walFrames(bytes).last).upperBound
        bytes.removeSubrange(end...)
        let room = directIOAlignment - end % directIOAlignment
        bytes += padding ? (0..<room).map { WalFormat.blockPadding[$0 % WalFormat.blockPadding.count] } : [UInt8](repeating: 7, count: room)
        try f.writeFile(walPath(name), bytes)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        let t2 = try g.tenant()
        if padding {
            #expect(t2.lifecycle == .active)
            #expect(t2.status().lastRecordLsn == Lsn(11))
            #expect(t2.status().walTailCuts == 0)
        } else {
            #expect(t2.lifecycle != .active, "bytes after a seal that are not padding are damage")
        }
        await g.manager.shutdown()
    }

    /// A kill between a new segment's create and its first write leaves it
    /// empty: it held nothing, so it is removed without a report (it was
    /// reported as a tail cut of 0 bytes, at error level).
    @Test func anEmptyNewestSegmentIsRemovedWithoutAReport() async throws {
        let f = try await DiskFixture.open(SimulatedDisk(directIO: true))
        let t = try await f.manager.create(testTenant)
        for n in 0..<3 as Range<UInt64> { _ = try await t.put(oddCommit(n)) }
        await f.manager.shutdown()
        let empty = walPath(Hex.fixed(16, digits: 16) + ".wal")
        try f.writeFile(empty, [])
        let g = try await DiskFixture.open(f.disk, config: f.config)
        let t2 = try g.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().walTailCuts == 0)
        #expect(t2.status().lastRecordLsn == Lsn(15))
        #expect(!g.walSegments().contains(Hex.fixed(16, digits: 16) + ".wal"))
        _ = try await t2.put(oddCommit(3))
        await g.manager.shutdown()
    }

    /// A commit zeroed after its fsync, inside the last block, is not taken
    /// for padding: padding is not zeros. Cut, and reported.
    @Test func smallCommitsZeroedAfterTheirFsyncAreReported() async throws {
        let f = try await DiskFixture.open(SimulatedDisk(directIO: true))
        let t = try await f.manager.create(testTenant)
        _ = try await t.put(oddCommit(0))
        for lsn in 20..<24 as Range<UInt64> { _ = try await t.put([delta(key(0), lsn, offset: 0, bytes: [1, 2, 3])]) }
        let name = try #require(f.walSegments().first)
        let image = f.disk.crashImage()
        f.disk.crashNow()
        await f.manager.shutdown()
        var bytes = try image.contents(of: walPath(name))
        let end = (walFrames(bytes).last?.upperBound ?? 0)
        // The last commit (one small delta) lies in the last block: zero it, padding up to it kept.
        let last = try #require(walFrames(bytes).last).lowerBound
        #expect(last / directIOAlignment == (bytes.count - 1) / directIOAlignment, "the last commit is in the last block")
        for i in last..<end { bytes[i] = 0 }
        try image.replaceFile(walPath(name), with: bytes)
        let g = try await DiskFixture.open(image, config: f.config)
        let t2 = try g.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().lastRecordLsn == Lsn(22))
        #expect(t2.status().walTailCuts == 1)
        await g.manager.shutdown()
    }

    /// Zeros past the block boundary after the last frame are not padding:
    /// a direct write that extended the file and then tore. Cut, and reported.
    @Test func zerosBeyondThePaddedBlockAreATornWriteAndReported() async throws {
        let f = try await DiskFixture.open(SimulatedDisk(directIO: true))
        let t = try await f.manager.create(testTenant)
        for n in 0..<3 as Range<UInt64> { _ = try await t.put(oddCommit(n)) }
        let name = try #require(f.walSegments().first)
        let image = f.disk.crashImage()
        f.disk.crashNow()
        await f.manager.shutdown()
        let g = try await DiskFixture.open(image, config: f.config)
        await g.manager.shutdown()
        // The replay trimmed the padding of the unsealed segment; a torn next commit leaves zeros past a block.
        let bytes = try g.readFile(walPath(name))
        try g.writeFile(walPath(name), bytes + [UInt8](repeating: 0, count: 2 * directIOAlignment - bytes.count % directIOAlignment))
        let h = try await DiskFixture.open(g.disk, config: g.config)
        let t3 = try h.tenant()
        #expect(t3.lifecycle == .active)
        #expect(t3.status().lastRecordLsn == Lsn(15))
        #expect(t3.status().walTailCuts == 1)
        await h.manager.shutdown()
    }

    /// A commit written and then not fsynced (failpoint) is cut back; the
    /// next commit must start from the partial block as it was before, or
    /// the records of the one before the failure are lost or garbled.
    @Test(arguments: [false, true], 0..<4 as Range<UInt64>)
    func aCommitAfterAFailedOneStartsFromTheRightBytes(directIO: Bool, seed: UInt64) async throws {
        var f = try await DiskFixture.open(SimulatedDisk(directIO: directIO))
        let t = try await f.manager.create(testTenant)
        _ = try await t.put(oddCommit(0))
        _ = try await t.put(oddCommit(1))
        try f.failpoints.configure("wal-before-fsync", .return)
        guard case .failure = await putResult(t, oddCommit(2)) else {
            Issue.record("the put should fail")
            return
        }
        try f.failpoints.configure("wal-before-fsync", .off)
        _ = try await t.put([image(key(9), 20, seed: 9)])
        f = try await f.afterPowerLoss(.torn(seed: seed))
        let t2 = try f.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().lastRecordLsn == Lsn(20))
        #expect(t2.status().walTailCuts == 0)
        #expect(try await t2.getPage(key: key(1), lsn: Lsn(12)).page == page(UInt64(1) << 32 | 12))
        #expect(try await t2.getPage(key: key(9), lsn: Lsn(20)).page == page(9))
        await #expect(throws: StorageError.pageNotFound(testTenant, key(2), Lsn(20))) {
            try await t2.getPage(key: key(2), lsn: Lsn(20))
        }
        await f.manager.shutdown()
    }

    /// On a real filesystem (ext4 in /tmp here) the open segment really is
    /// written with O_DIRECT, its file ends in padding, and a copy of the
    /// data directory taken as a crash would leave it replays without a cut.
    @Test func onARealFilesystemTheSegmentIsWrittenDirectlyAndReplays() async throws {
        let fx = try await TenantFixture.make(label: "wal-direct")
        for n in 0..<5 as Range<UInt64> { _ = try await fx.tenant.put(oddCommit(n)) }
        let walDir = fx.tenantDir + "/wal"
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: walDir).first { $0.hasSuffix(".wal") })
        let path = walDir + "/" + name
        guard let flags = Self.openFlags(of: path) else {
            Issue.record("the open segment \(name) has no descriptor in /proc/self/fd")
            await fx.manager.shutdown()
            return
        }
        let oDirect = 0o40000
        if Self.filesystemTakesDirectIO(walDir) {
            #expect(flags & oDirect != 0, "flags \(String(flags, radix: 8))")
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(bytes.count % directIOAlignment == 0 && bytes.count > (walFrames(bytes).last?.upperBound ?? 0))
        } else {
            print("the filesystem of \(walDir) refuses O_DIRECT: the WAL is written through the page cache")
        }
        // What a kill -9 leaves: the files as they are, the segment unsealed.
        let copyDir = TempDir("wal-direct-copy")
        defer { withExtendedLifetime(copyDir) {} }
        let copy = copyDir.path + "/data"
        try FileManager.default.copyItem(atPath: fx.dir.path, toPath: copy)
        await fx.manager.shutdown()
        var m = try TenantManager(dataDirectory: copy, config: fx.manager.config, cache: PageCache(capacity: 64),
                                  failpoints: Failpoints(), logger: quietLogger())
        try await m.loadAll()
        var t = try m.tenant(testTenant)
        #expect(t.status().walTailCuts == 0)
        #expect(t.status().lastRecordLsn == Lsn(19))
        _ = try await t.put(oddCommit(5))
        await m.shutdown()
        m = try TenantManager(dataDirectory: copy, config: fx.manager.config, cache: PageCache(capacity: 64),
                              failpoints: Failpoints(), logger: quietLogger())
        try await m.loadAll()
        t = try m.tenant(testTenant)
        #expect(t.status().walTailCuts == 0)
        for n in 0...5 as ClosedRange<UInt64> {
            #expect(try await t.getPage(key: key(UInt32(n)), lsn: Lsn(10 + 2 * n)).page == page(UInt64(n) << 32 | (10 + 2 * n)))
        }
        await m.shutdown()
    }

    /// A real tmpfs (which takes O_DIRECT) fills up in the middle of a
    /// commit: the error is ENOSPC, the cut-back leaves exactly the commits
    /// before it, and once there is room again the next commits continue
    /// from the right bytes (through the page cache: the failed direct write
    /// turned direct I/O off for the file).
    @Test func aFullTmpfsRefusesACommitAndTheNextOnesContinueAfterTheLastGoodOne() throws {
        let dir = TempDir()
        guard let tmpfs = MountedTmpfs.mount(at: dir.path + "/tmpfs", size: "1m", test: "aFullTmpfsRefusesACommit") else { return }
        defer {
            tmpfs.unmount()
            withExtendedLifetime(dir) {}
        }
        let filler = tmpfs.path + "/filler"
        let room = try RawFile.open(testFS, filler, .createExclusive)
        try room.write([UInt8](repeating: 1, count: 400_000), at: 0)
        room.close()
        let path = tmpfs.path + "/log"
        let file = try RawFile.open(testFS, path, .createExclusive)
        defer { file.close() }
        let log = try AppendOnlyFile(file: file, end: 0)
        var written: [UInt8] = []
        func commit(_ n: Int) throws(StorageError) {
            let bytes = (0..<10_007).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ n) }
            try log.append(bytes.count, padding: WalFormat.blockPadding) { $0.copyBytes(from: bytes) }
            file.sync()
            written += bytes
        }
        var n = 0
        var failure: StorageError?
        while n < 200 {
            do throws(StorageError) { try commit(n) } catch { failure = error; break }
            n += 1
        }
        guard case .io(_, _, let errno) = failure else {
            Issue.record("the disk never filled: \(String(describing: failure))")
            return
        }
        #expect(errno == ENOSPC)
        #expect(n > 20, "\(n) commits before the disk was full")
        try log.cutBack(to: log.end)
        file.sync()
        func contents() throws -> [UInt8] {
            let reader = try RawFile.open(testFS, path, .readOnly)
            defer { reader.close() }
            return try reader.read(count: try reader.size(), at: 0)
        }
        #expect(try contents() == written)
        try testFS.unlink(filler)
        for m in n..<n + 5 { try commit(m) }
        #expect(try contents() == written)
    }

    /// The `flags:` of this process's descriptor open on `path`.
    static func openFlags(of path: String) -> Int? {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in fds {
            guard (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) == path,
                  let info = try? String(contentsOfFile: "/proc/self/fdinfo/" + fd, encoding: .utf8),
                  let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags:") })
            else { continue }
            return Int(line.dropFirst("flags:".count).trimmingCharacters(in: .whitespaces), radix: 8)
        }
        return nil
    }

    static func filesystemTakesDirectIO(_ dir: String) -> Bool {
        let fd = Glibc.open(dir + "/.direct-probe", O_CREAT | O_RDWR, 0o600)
        defer { unlink(dir + "/.direct-probe") }
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        return RealFileSystem().bypassPageCache(fd, true)
    }
}
