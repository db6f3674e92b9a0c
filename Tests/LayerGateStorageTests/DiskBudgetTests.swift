import Foundation
import LayerGateTestSupport
import Synchronization
import Testing

@testable import LayerGateStorage

/// The room ingest keeps for a flush (`DiskBudget.flushSize`) holds what the
/// flush really writes, for the record mixes that cost the most on disk over
/// what memory counts: the smallest deltas (the index entry outweighs them),
/// and images that each follow a delta ending just where the most padding
/// starts them at a block boundary. A flush that outgrew its room could fail
/// on a full disk with nothing left to free.
@Suite("Disk budget: the room kept for a flush")
struct DiskBudgetTests {
    @Test(arguments: ["smallest deltas", "one-byte patches", "padded images", "images", "mixed", "one delta", "one image"])
    func aFlushFitsTheRoomKeptForIt(mix: String) throws {
        let records = Self.records(mix)
        let memory = InMemoryLayer(startLsn: Lsn(1))
        memory.insert(records)
        let dir = TempDir()
        let written = try writeLayer(dir.path, records)
        let room = DiskBudget.flushSize(memory.approximateBytes)
        #expect(written.size <= room, "\(mix): \(records.count) records counted \(memory.approximateBytes) bytes wrote \(written.size), over the \(room) kept")
    }

    /// A put admitted at the very fill line still leaves room to flush it,
    /// and nothing else (no reserve, no compaction room) to borrow from: the
    /// largest batch of the smallest records the disk takes, searched down in
    /// steps of 0.5 %, then a flush. Ingest is admitted by what memory counts
    /// and what the WAL really grows by, against the bound. Before, admission
    /// counted the WAL's record bytes (29 a record where memory counts 32, and
    /// none of the frame's padding), and this flush was refused for space.
    @Test func aPutAtTheFillLineLeavesRoomToFlushIt() async throws {
        let disk = SimulatedDisk(capacity: 1 << 30)
        let f = try await DiskFixture.open(disk, config: DiskFixture.config())
        let t = try await f.manager.create(testTenant)
        let used = (1 << 30) - Int(try disk.availableBytes(""))
        let free = 3 << 20
        disk.capacity = used + free
        func smallest(_ n: Int) -> [Record] {
            (1...n).map { Record(key: key(UInt32($0)), lsn: Lsn(UInt64($0)), value: .delta(Delta(willInit: true, patches: []))) }
        }
        var n = free / 70  // above what fits: a record takes 33 bytes of WAL and up to 48 of room
        var admitted = false
        while !admitted && n > 1000 {
            switch await putResult(t, smallest(n)) {
            case .success: admitted = true
            case .failure(.resourceExhausted): n -= n / 200
            case .failure(let e): throw e
            }
        }
        try #require(admitted)
        #expect(n > free / 100, "only \(n) records fit in \(free) bytes")
        let over = smallest(1).map { Record(key: $0.key, lsn: Lsn(UInt64(n + 1)), value: $0.value) }
        guard case .failure(.resourceExhausted) = await putResult(t, over) else {
            Issue.record("the disk was not full after \(n) records")
            return
        }
        try await t.flush()
        #expect(try await t.getPage(key: key(5), lsn: nil).page == [UInt8](repeating: 0, count: pageSize))
        await f.manager.shutdown()
    }

    /// Compaction never takes the room kept for flushes, even for an image
    /// set whose size nothing knew (the tenant's first): tenant A holds 200
    /// images in an L0 layer, tenant B fills the disk to the line with the
    /// smallest records, then A's forced image set (1.6 MiB) is written or
    /// refused, and B's flush fits either way. Found by an adversarial run on
    /// a real tmpfs, where A's image set took the room and B's flush failed.
    /// Then more room comes (`extra`): less than the set, over several of
    /// compaction's checks (it writes a MiB between two), or about all of it.
    @Test(arguments: [0, 1_200_000, 1_500_000, 3_000_000])
    func anImageSetNeverTakesTheRoomKeptForFlushes(extra: Int) async throws {
        let disk = SimulatedDisk(capacity: 1 << 30)
        let f = try await DiskFixture.open(disk, config: DiskFixture.config())
        let a = try await f.manager.create(testTenant)
        let b = try await f.manager.create(try TenantId(parsing: "000000000000000000000000000000bb"))
        _ = try await a.put((1...200 as ClosedRange<UInt64>).map { image(key(UInt32($0)), $0) })
        try await a.flush()
        disk.capacity = (1 << 30) - Int(try disk.availableBytes("")) + (6 << 20)
        var lsn: UInt64 = 0
        var size: UInt64 = 16_384
        while size >= 1 {
            let batch = (lsn + 1...lsn + size).map { Record(key: key(UInt32($0)), lsn: Lsn($0), value: .delta(Delta(willInit: true, patches: []))) }
            switch await putResult(b, batch) {
            case .success: lsn += size
            case .failure(.resourceExhausted): size /= 2
            case .failure(let e): throw e
            }
        }
        #expect(lsn > 20_000, "B took \(lsn) records")
        disk.capacity = (disk.capacity ?? 0) + extra
        do {
            _ = try await a.compact(forceImageLayers: true)
        } catch {
            // Refused for space is right too: what it wrote is gone.
            guard case .resourceExhausted = error else { throw error }
        }
        try await b.flush()
        #expect(try await b.getPage(key: key(7), lsn: nil).page == [UInt8](repeating: 0, count: pageSize))
        #expect(try await a.getPage(key: key(7), lsn: nil).page == page(UInt64(7) << 32 | 7))
        await f.manager.shutdown()
    }

    /// Compaction steps and downloads take grants out of the room beyond the
    /// flushes' and the reserve: a grant is never given bytes another holds,
    /// also when many are asked for at once, and a grant given back is room again.
    @Test func grantsNeverShareTheSameBytes() throws {
        let disk = SimulatedDisk(capacity: 4 << 20)
        let budget = DiskBudget(fs: disk, reserveBytes: 0, checkpointDistanceBytes: 64 << 20)
        var step = 0, download = 0
        #expect(try budget.admitCompactionWrite(tenant: testTenant, pending: 0, next: 10_000, held: &step) == 1 << 20)
        #expect(step == (1 << 20) + DiskBudget.layerFileEnd)
        #expect(throws: StorageError.self) { try budget.admitDownload(bytes: 3 << 20, tenant: testTenant, layer: "x", held: &download) }
        #expect(download == 0)
        try budget.admitDownload(bytes: (3 << 20) - DiskBudget.layerFileEnd, tenant: testTenant, layer: "x", held: &download)
        #expect(try budget.compactionBudget() == 0)
        budget.giveBack(&step)
        budget.giveBack(&download)
        #expect(try budget.compactionBudget() == 4 << 20)
        // Sixteen downloads of 1 MiB at once on 4 MiB: at most four are granted.
        let granted = Mutex<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            var held = 0
            try? budget.admitDownload(bytes: 1 << 20, tenant: testTenant, layer: "y", held: &held)
            if held > 0 { granted.withLock { $0.append(held) } }
        }
        let all = granted.withLock { $0 }
        #expect(all.count <= 4 && all.count >= 1, "\(all.count) granted")
        for var held in all { budget.giveBack(&held) }
        #expect(try budget.compactionBudget() == 4 << 20)
    }

    /// Two tenants' commits are admitted by separate commit leaders, each
    /// between its check and the moment the flushes' room counts its
    /// records: the first's append and flush room are held against the
    /// second until then, or both pass on the same free space and an
    /// acknowledged put cannot be flushed.
    @Test func commitsAdmittedAtOnceNeverShareTheRoom() throws {
        let disk = SimulatedDisk(capacity: 4 << 20)
        let budget = DiskBudget(fs: disk, reserveBytes: 0, checkpointDistanceBytes: 64 << 20)
        let (wal, memory) = (400 << 10, 3 << 19)  // each takes 0.39 MiB now and keeps 2.03 MiB to flush: one fits
        let other = try TenantId(parsing: "00000000000000000000000000000b0b")
        var a = 0, b = 0
        try budget.admitIngest(walBytes: wal, memoryBytes: memory, tenant: testTenant, held: &a)
        #expect(a == wal + DiskBudget.flushSize(memory))
        #expect(throws: StorageError.self, "B would take the room A's records need to flush") {
            try budget.admitIngest(walBytes: wal, memoryBytes: memory, tenant: other, held: &b)
        }
        #expect(b == 0)
        // A's records are in memory: the flushes' room has them, and A gives its grant back.
        budget.adjustUnflushedRoom(by: DiskBudget.flushSize(memory))
        budget.giveBack(&a)
        #expect(throws: StorageError.self) { try budget.admitIngest(walBytes: wal, memoryBytes: memory, tenant: other, held: &b) }
        // A flushed: B fits.
        budget.adjustUnflushedRoom(by: -DiskBudget.flushSize(memory))
        try budget.admitIngest(walBytes: wal, memoryBytes: memory, tenant: other, held: &b)
        budget.giveBack(&b)
        // Sixteen commits at once, each holding 0.26 MiB, on 4 MiB: the grants never exceed the disk.
        let granted = Mutex<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            var held = 0
            try? budget.admitIngest(walBytes: 100 << 10, memoryBytes: 100 << 10, tenant: testTenant, held: &held)
            if held > 0 { granted.withLock { $0.append(held) } }
        }
        let all = granted.withLock { $0 }
        #expect(!all.isEmpty && all.reduce(0, +) <= 4 << 20, "\(all.count) granted")
        for var held in all { budget.giveBack(&held) }
        #expect(try budget.compactionBudget() == 4 << 20)
    }

    /// The flush room's third rests on the writer's bound of one value: for
    /// every kind of value, what the writer may add for it is within 4/3 of
    /// what memory counts for it.
    @Test func theWritersBoundOfAValueIsWithinTheFlushRoom() {
        let values: [RecordValue] = [
            .delta(Delta(willInit: true, patches: [])),
            .delta(Delta(willInit: false, patches: [Patch(offset: 0, data: [1])])),
            .delta(Delta(willInit: false, patches: (0..<64).map { Patch(offset: $0 * 128, data: [UInt8](repeating: 2, count: 128)) })),
            .image([UInt8](repeating: 3, count: pageSize)),
        ]
        for v in values {
            let counted = InMemoryLayer.countedBytes(Record(key: key(0), lsn: Lsn(1), value: v))
            #expect(LayerWriter.diskBound(of: v) <= counted + counted / 3, "\(v)")
        }
    }

    /// The budget's messages set what is needed beside what is free: three
    /// digits, truncated, so that the two do not read the same.
    @Test func byteCountsKeepThreeDigits() {
        #expect(ByteCount.describe(1023) == "1023 bytes")
        #expect(ByteCount.describe(1536) == "1.50 KiB")
        #expect(ByteCount.describe(1_400_000) == "1.33 MiB")
        #expect(ByteCount.describe(1_451_000) == "1.38 MiB")
        #expect(ByteCount.describe(25 << 19) == "12.5 MiB")
        #expect(ByteCount.describe(150 << 20 + 1) == "150 MiB")
        #expect(ByteCount.describe(1 << 30) == "1.00 GiB")
        #expect(ByteCount.describe(-5) == "0 bytes")
    }

    /// Records in LSN order, one LSN each.
    private static func records(_ mix: String) -> [Record] {
        var out: [Record] = []
        var lsn: UInt64 = 1
        func add(_ make: (UInt64) -> Record) {
            out.append(make(lsn))
            lsn += 1
        }
        switch mix {
        case "smallest deltas":
            // A will_init delta without patches: 4 bytes encoded.
            for b in 0..<40_000 as Range<UInt32> {
                add { Record(key: key(b), lsn: Lsn($0), value: .delta(Delta(willInit: true, patches: []))) }
            }
        case "one-byte patches":
            for b in 0..<40_000 as Range<UInt32> { add { delta(key(b), $0, offset: Int(b % 8192), bytes: [7]) } }
        case "padded images":
            // Per key: a delta of 6,144 encoded bytes from a block boundary (so the
            // image after it starts 2,048 bytes before the next), then that image,
            // padded to it, ending on a boundary again.
            for b in 0..<1_000 as Range<UInt32> {
                add { delta(key(b), $0, offset: 0, bytes: [UInt8](repeating: 3, count: 6144 - 8)) }
                add { image(key(b), $0) }
            }
        case "one delta":
            add { Record(key: key(0), lsn: Lsn($0), value: .delta(Delta(willInit: true, patches: []))) }
        case "one image":
            add { image(key(0), $0) }
        case "images":
            for b in 0..<1_500 as Range<UInt32> { add { image(key(b), $0) } }
        default:
            for b in 0..<3_000 as Range<UInt32> {
                switch b % 4 {
                case 0: add { image(key(b), $0) }
                case 1: add { delta(key(b), $0, offset: Int(b % 4000), bytes: [UInt8](repeating: 1, count: Int(b % 900) + 1)) }
                case 2: add { Record(key: key(b), lsn: Lsn($0), value: .delta(Delta(willInit: true, patches: []))) }
                default:
                    add { delta(key(b), $0, offset: 0, bytes: [UInt8](repeating: 2, count: Int(b % 7000) + 1)) }
                    add { image(key(b), $0) }
                }
            }
        }
        return out
    }
}
