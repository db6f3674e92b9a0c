import Glibc
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// The WAL under real faults: a failed roll, torn tails with holes, damage
/// before and after the last fsync, sealed and missing segments, format 1.
@Suite("WAL: rolls, torn tails, corruption")
struct WalTests {

    /// Issue 9.1: the first write of a new segment fails (a full disk). The
    /// segment must not stay behind under the failed batch's LSN, or a later
    /// put at a lower LSN lands in it and the next load breaks the tenant.
    @Test(arguments: ["ENOSPC", "failpoint"])
    func aFailedRollLeavesNoSegmentAndALowerLsnLaterIsFine(how: String) async throws {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        _ = try await t.put([image(key(1), 10)])
        try await t.flush()  // freezes: the next put starts a new segment
        if how == "ENOSPC" {
            f.disk.inject(SimulatedDisk.Fault([.write], pathContains: "/wal/", errno: ENOSPC, count: 1))
        } else {
            try f.failpoints.configure("wal-before-fsync", .return)
        }
        let failed = await putResult(t, [image(key(2), 100), image(key(3), 101)])
        guard case .failure(let e) = failed else { Issue.record("the put should fail"); return }
        if how == "ENOSPC" { #expect(e.isResourceExhaustion, "\(e)") }
        #expect(!f.walSegments().contains(Wal.segmentName(Lsn(100))), "\(f.walSegments())")
        f.disk.clearFaults()
        try f.failpoints.configure("wal-before-fsync", .off)
        #expect(try await t.put([image(key(2), 50, seed: 5)]) == Lsn(50))
        #expect(f.walSegments().contains(Wal.segmentName(Lsn(50))))
        f = try await f.afterPowerLoss()
        let t2 = try f.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().lastRecordLsn == Lsn(50))
        #expect(try await t2.getPage(key: key(2), lsn: Lsn(50)).page == page(5))
        #expect(try await t2.getPage(key: key(1), lsn: Lsn(50)).page == page(UInt64(1) << 32 | 10))
        await f.manager.shutdown()
    }

    /// Three commits in one segment, left as a crash leaves it (no seal).
    func threeCommits() async throws -> (DiskFixture, [UInt8], String) {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        for lsn in [10, 11, 12] as [UInt64] { _ = try await t.put([image(key(1), lsn)]) }
        f = try await f.afterPowerLoss()
        await f.manager.shutdown()
        // The restart sealed nothing: appends only roll, and none came.
        let name = f.walSegments()[0]
        return (f, try f.readFile(walPath(name)), name)
    }

    /// Issue 9.2: a torn tail with a hole (the last commit's header zeroed,
    /// bytes after it) is cut at the last verified commit.
    @Test func aTornTailWithAHoleIsCut() async throws {
        let (f, bytes, name) = try await threeCommits()
        let frames = walFrames(bytes).map(\.lowerBound)
        #expect(frames.count == 4)  // header + three commits
        var torn = bytes
        for i in frames[3]..<frames[3] + 24 { torn[i] = 0 }
        try f.writeFile(walPath(name), torn)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        let t = try g.tenant()
        #expect(t.lifecycle == .active)
        #expect(t.status().lastRecordLsn == Lsn(11))
        #expect(t.status().walTailCuts == 1)
        #expect(t.status().lastWalTailCut?.contains(name) == true)
        #expect(try g.readFile(walPath(name)).count == frames[3], "cut at the last verified commit")
        await g.manager.shutdown()
    }

    /// Issue 9.3: damage to a commit that a later commit follows was durable
    /// once: the tenant is broken with a clear error, not silently shorter.
    @Test func damageBeforeTheLastFsyncBreaksTheTenant() async throws {
        let (f, bytes, name) = try await threeCommits()
        let frames = walFrames(bytes).map(\.lowerBound)
        var bad = bytes
        bad[frames[2] + 100] ^= 0x01  // inside commit 2's page
        try f.writeFile(walPath(name), bad)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken(let reason) = try g.tenant().lifecycle else {
            Issue.record("expected broken, got \(try g.tenant().lifecycle)")
            return
        }
        #expect(reason.contains("was written after it had been fsynced"), "\(reason)")
        #expect(reason.contains(name) && !reason.contains("/tmp"), "\(reason)")
        await g.manager.shutdown()
    }

    /// The newest commit of an unsealed segment cannot be told from a torn
    /// write: it is cut, counted and reported, and the tenant serves.
    @Test func damageToTheNewestCommitAfterACrashIsCutAndReported() async throws {
        let (f, bytes, name) = try await threeCommits()
        let frames = walFrames(bytes).map(\.lowerBound)
        var bad = bytes
        bad[frames[3] + 100] ^= 0x01
        try f.writeFile(walPath(name), bad)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        let t = try g.tenant()
        #expect(t.lifecycle == .active)
        #expect(t.status().lastRecordLsn == Lsn(11))
        #expect(t.status().walTailCuts == 1)
        await g.manager.shutdown()
    }

    /// After a clean stop the segment is sealed: damage anywhere in it,
    /// the newest commit included, is corruption.
    @Test func aSealedSegmentDetectsDamageToItsNewestCommit() async throws {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        for lsn in [10, 11, 12] as [UInt64] { _ = try await t.put([image(key(1), lsn)]) }
        f = try await f.restarted()  // clean close: sealed
        await f.manager.shutdown()
        let name = f.walSegments()[0]
        let bytes = try f.readFile(walPath(name))
        let frames = walFrames(bytes).map(\.lowerBound)
        #expect(frames.count == 5, "header, three commits, seal")
        var bad = bytes
        bad[frames[3] + 100] ^= 0x01
        try f.writeFile(walPath(name), bad)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken = try g.tenant().lifecycle else {
            Issue.record("expected broken, got \(try g.tenant().lifecycle)")
            return
        }
        await g.manager.shutdown()
    }

    /// Segments are chained and sealed: an older segment cut short, or one
    /// missing between two others, is corruption.
    @Test func aSegmentCutShortOrMissingIsCorruption() async throws {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        for lsn in [10, 20, 30] as [UInt64] {
            _ = try await t.put([image(key(1), lsn)])
            t.state.withLock { Tenant.freeze(&$0) }  // roll without flushing
        }
        f = try await f.afterPowerLoss()
        await f.manager.shutdown()
        let names = f.walSegments()
        #expect(names.count == 3, "\(names)")
        let first = try f.readFile(walPath(names[0]))
        try f.writeFile(walPath(names[0]), Array(first.dropLast(8)))
        var g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken(let reason) = try g.tenant().lifecycle else { Issue.record("cut-short segment loaded"); return }
        #expect(reason.contains(names[0]), "\(reason)")
        await g.manager.shutdown()
        try f.writeFile(walPath(names[0]), first)
        try f.disk.unlink(walPath(names[1]))
        g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken(let missing) = try g.tenant().lifecycle else { Issue.record("a missing segment went unnoticed"); return }
        #expect(missing.contains("a segment is missing"), "\(missing)")
        await g.manager.shutdown()
    }

    /// A failed append is cut back and the cut is fsynced: whatever a power
    /// loss keeps of the failed write, the failed record never comes back.
    @Test(arguments: 0..<8 as Range<UInt64>)
    func aFailedAppendNeverComesBackAfterAPowerLoss(seed: UInt64) async throws {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        _ = try await t.put([image(key(1), 10)])
        try f.failpoints.configure("wal-before-fsync", .return)
        guard case .failure = await putResult(t, [image(key(2), 20), image(key(3), 21)]) else {
            Issue.record("the put should fail")
            return
        }
        f = try await f.afterPowerLoss(.torn(seed: seed))
        let t2 = try f.tenant()
        #expect(t2.lifecycle == .active)
        #expect(t2.status().lastRecordLsn == Lsn(10))
        await f.manager.shutdown()
    }

    /// Segments written by layergate 0.1 (format 1) still replay.
    @Test func formatOneSegmentsStillReplay() async throws {
        let f = try await DiskFixture.open()
        _ = try await f.manager.create(testTenant)
        await f.manager.shutdown()
        var w = ByteWriter()
        for r in [image(key(1), 5), delta(key(1), 6, offset: 3, bytes: [9, 9])] {
            var payload = ByteWriter()
            payload.u64(r.lsn.rawValue)
            r.key.write(to: &payload)
            ValueCodec.encode(r.value, into: &payload)
            w.u32(UInt32(payload.count))
            w.u32(Checksum.crc32c(payload.bytes))
            w.bytes(payload.bytes)
        }
        w.zeros(16)  // a torn tail of zeros
        try f.writeFile(walPath(Wal.segmentName(Lsn(5))), w.bytes)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        let t = try g.tenant()
        #expect(t.lifecycle == .active)
        var expected = page(UInt64(1) << 32 | 5)
        expected[3] = 9
        expected[4] = 9
        #expect(try await t.getPage(key: key(1), lsn: Lsn(6)).page == expected)
        // New commits go to a new, format-2 segment after it.
        _ = try await t.put([image(key(2), 7)])
        let h = try await g.restarted()
        #expect(try h.tenant().status().lastRecordLsn == Lsn(7))
        await h.manager.shutdown()
    }

    /// A verified commit that repeats a (key, LSN) — what no put could store —
    /// breaks the tenant at replay (it would otherwise stop a flush later).
    @Test func aCommitRepeatingAKeyAtAnLsnIsCorruption() async throws {
        let (f, bytes, name) = try await threeCommits()
        let parts = [WalFormat.encodeRecords([image(key(1), 12)])]
        var frame = [UInt8](repeating: 0, count: WalFormat.frameSize(parts: parts))
        frame.withUnsafeMutableBytes { WalFormat.writeFrame(.commit, sequence: 4, parts: parts, into: $0) }
        try f.writeFile(walPath(name), bytes + frame)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken(let reason) = try g.tenant().lifecycle else { Issue.record("a repeated record was replayed"); return }
        #expect(reason.contains("appears twice"), "\(reason)")
        await g.manager.shutdown()
    }

    /// Damage to the start of a segment (its header, or its first 4 KiB) with
    /// commits after it is corruption, sealed or not — never a format-1
    /// segment's torn tail that takes the whole segment away.
    @Test(arguments: ["first byte", "first 4 KiB"])
    func damageToTheStartOfASegmentIsCorruption(what: String) async throws {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        for lsn in [10, 11, 12] as [UInt64] { _ = try await t.put([image(key(1), lsn)]) }
        f = try await f.restarted()  // sealed
        await f.manager.shutdown()
        let name = f.walSegments()[0]
        var bytes = try f.readFile(walPath(name))
        if what == "first byte" { bytes[0] ^= 0x01 } else { for i in 0..<4096 { bytes[i] = 0 } }
        try f.writeFile(walPath(name), bytes)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken(let reason) = try g.tenant().lifecycle else {
            Issue.record("\(what): the tenant loaded with last LSN \(try g.tenant().status().lastRecordLsn)")
            return
        }
        #expect(reason.contains("segment header"), "\(reason)")
        #expect(g.walSegments().contains(name), "the segment is kept as evidence")
        await g.manager.shutdown()
    }

    /// The WAL must continue where the layers end: an index.json put back from
    /// an older copy, or the oldest segment deleted by hand, leaves records
    /// nowhere; the tenant is broken, not silently older.
    @Test func aGapBetweenTheLayersAndTheWalIsCorruption() async throws {
        var f = try await DiskFixture.open()
        let t = try await f.manager.create(testTenant)
        _ = try await t.put([image(key(1), 10)])
        try await t.flush()
        let oldIndex = try f.readFile("tenants/\(testTenant)/index.json")
        for lsn in [20, 30, 40] as [UInt64] {
            _ = try await t.put([image(key(1), lsn)])
            try await t.flush()
        }
        _ = try await t.put([image(key(1), 50)])  // stays in the WAL
        f = try await f.restarted()
        await f.manager.shutdown()
        try f.writeFile("tenants/\(testTenant)/index.json", oldIndex)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        guard case .broken(let reason) = try g.tenant().lifecycle else { Issue.record("an older index.json was accepted"); return }
        #expect(reason.contains("was index.json replaced by an older copy"), "\(reason)")
        await g.manager.shutdown()

        // No layers at all, and the oldest of several segments deleted by hand.
        var h = try await DiskFixture.open()
        let u = try await h.manager.create(testTenant)
        for lsn in [10, 20, 30] as [UInt64] {
            _ = try await u.put([image(key(1), lsn)])
            u.state.withLock { Tenant.freeze(&$0) }
        }
        h = try await h.afterPowerLoss()
        await h.manager.shutdown()
        try h.disk.unlink(walPath(h.walSegments()[0]))
        let i = try await DiskFixture.open(h.disk, config: h.config)
        guard case .broken = try i.tenant().lifecycle else { Issue.record("a deleted oldest segment went unnoticed"); return }
        await i.manager.shutdown()
    }
}
