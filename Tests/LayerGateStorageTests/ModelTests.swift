import CSystemShims
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

@Suite("Model: ids, keys, records, redo")
struct ModelTests {
    @Test func tenantIdParsesEitherCaseAndPrintsLowercase() throws {
        let id = try TenantId(parsing: "0123456789ABCDEFfedcba9876543210")
        #expect(id.description == "0123456789abcdeffedcba9876543210")
        #expect(try TenantId(parsing: id.description) == id)
    }

    @Test(arguments: ["", "0123", "0123456789abcdef0123456789abcdeg", "0123456789abcdef0123456789abcdef0", " 123456789abcdef0123456789abcdef",
                       // 32 UTF-8 bytes, the middle inside a two-byte character.
                       "0123456é89abcdef0123456789abcde", String(repeating: "é", count: 16), "0x23456789abcdef0123456789abcdef"])
    func tenantIdRejectsMalformed(_ text: String) {
        #expect(throws: StorageError.invalidTenantId(text)) { try TenantId(parsing: text) }
    }

    @Test func pageKeyOrderEqualsPackedByteOrder() {
        var rng = SeededRandom(seed: 7)
        let keys = (0..<500).map { _ in
            PageKey(spcOid: UInt32.random(in: 0...3, using: &rng), dbOid: UInt32.random(in: 0...3, using: &rng),
                    relNumber: UInt32.random(in: 0...3, using: &rng), fork: UInt8.random(in: 0...3, using: &rng),
                    block: UInt32.random(in: 0...UInt32.max, using: &rng))
        }
        let byKey = keys.sorted()
        let byHex = keys.sorted { $0.hex < $1.hex }
        #expect(byKey == byHex)
        for k in keys { #expect(PageKey(hex: Substring(k.hex)) == k) }
    }

    @Test func forkAbove255IsRejected() throws {
        #expect(throws: StorageError.self) { try PageKey(spcOid: 1, dbOid: 1, relNumber: 1, wireFork: 256, block: 0) }
        #expect(try PageKey(spcOid: 1, dbOid: 1, relNumber: 1, wireFork: 255, block: 0).fork == 255)
    }

    @Test func recordValidation() {
        let k = key(1)
        #expect(throws: StorageError.self) { try Record(key: k, lsn: Lsn(1), value: .image([0])).validate() }
        #expect(throws: StorageError.self) { try Record(key: k, lsn: Lsn(1), value: .image([UInt8](repeating: 0, count: 8193))).validate() }
        #expect(throws: StorageError.self) { try Record(key: k, lsn: Lsn(0), value: .image(page(1))).validate() }
        #expect(throws: StorageError.self) { try Record(key: k, lsn: Lsn(1), value: .delta(Delta(willInit: false, patches: []))).validate() }
        #expect(throws: StorageError.self) { try delta(k, 1, offset: 8190, bytes: [1, 2, 3]).validate() }
        #expect(throws: StorageError.self) { try delta(k, 1, offset: 8192, bytes: [1]).validate() }
        #expect(throws: StorageError.self) { try delta(k, 1, offset: -1, bytes: [1]).validate() }
        #expect(throws: StorageError.self) { try delta(k, 1, offset: 0, bytes: []).validate() }
        // An offset near Int.max must not overflow offset + length.
        #expect(throws: StorageError.self) { try delta(k, 1, offset: Int.max - 1, bytes: [1, 2]).validate() }
        #expect(throws: Never.self) { try delta(k, 1, offset: 8191, bytes: [9]).validate() }
        #expect(throws: Never.self) { try Record(key: k, lsn: Lsn(1), value: .delta(Delta(willInit: true, patches: []))).validate() }
    }

    @Test func redoAppliesPatchesInOrderAndWillInitZeroes() {
        var p = [UInt8](repeating: 7, count: pageSize)
        let d = Delta(willInit: true, patches: [Patch(offset: 10, data: [1, 2, 3]), Patch(offset: 11, data: [9])])
        p.withUnsafeMutableBytes { Redo.apply(d, to: $0) }
        #expect(p[0] == 0 && p[10] == 1 && p[11] == 9 && p[12] == 3 && p[13] == 0)
        // The encoded form gives the same page.
        var w = ByteWriter()
        ValueCodec.encode(.delta(d), into: &w)
        var q = [UInt8](repeating: 7, count: pageSize)
        let ok = w.bytes.withUnsafeBytes { enc in q.withUnsafeMutableBytes { Redo.applyEncoded(enc, to: $0) } }
        #expect(ok && q == p)
    }

    @Test func valueCodecRoundTripsAndRejectsGarbage() {
        let values: [RecordValue] = [.image(page(3)), .delta(Delta(willInit: false, patches: [Patch(offset: 5, data: [1])]))]
        for v in values {
            var w = ByteWriter()
            ValueCodec.encode(v, into: &w)
            #expect(w.count == ValueCodec.encodedSize(v))
            #expect(w.bytes.withUnsafeBytes { ValueCodec.decode($0) } == v)
            let cut = Array(w.bytes.dropLast())
            #expect(cut.withUnsafeBytes { ValueCodec.decode($0) } == nil)
        }
    }

    @Test func crc32cHardwareAndTableAgree() {
        var rng = SeededRandom(seed: 11)
        for n in [0, 1, 7, 8, 9, 63, 8192, 8201] {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let a = bytes.withUnsafeBytes { lg_crc32c(0, $0.baseAddress, n) }
            let b = bytes.withUnsafeBytes { lg_crc32c_portable(0, $0.baseAddress, n) }
            #expect(a == b)
        }
        // Every length around the 4-lane round (8192 bytes), the 3-lane one after it (6144) and
        // their sums, and odd tails.
        var lengths = Array(0..<80) + [6143, 6144, 6145, 6151, 8191, 8192, 8193, 8200, 12287, 12288, 12296,
                                       14335, 14336, 14337, 16384, 18433, 20000, 22527, 22528, 22536, 24576]
        lengths += (0..<40).map { _ in Int.random(in: 0...30_000, using: &rng) }
        for n in lengths {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let seed = UInt32.random(in: 0...UInt32.max, using: &rng)
            let a = bytes.withUnsafeBytes { lg_crc32c(seed, $0.baseAddress, n) }
            let b = bytes.withUnsafeBytes { lg_crc32c_portable(seed, $0.baseAddress, n) }
            #expect(a == b, "length \(n)")
            // combine(crc(A), crc(B), |B|) == crc(A || B)
            let cut = n / 3
            let ca = bytes.withUnsafeBytes { lg_crc32c_portable(0, $0.baseAddress, cut) }
            let cb = bytes.withUnsafeBytes { lg_crc32c_portable(0, $0.baseAddress! + cut, n - cut) }
            #expect(lg_crc32c_combine(ca, cb, n - cut) == bytes.withUnsafeBytes { lg_crc32c_portable(0, $0.baseAddress, n) })
        }
        // Unaligned starts: the lanes load through memcpy, at any address.
        for offset in 1..<8 {
            for n in [8192, 14336, 8200 + offset] {
                let bytes = (0..<(n + offset)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let a = bytes.withUnsafeBytes { lg_crc32c(0, $0.baseAddress! + offset, n) }
                let b = bytes.withUnsafeBytes { lg_crc32c_portable(0, $0.baseAddress! + offset, n) }
                #expect(a == b, "offset \(offset), length \(n)")
            }
        }
        // The standard check value of CRC-32C.
        #expect(Checksum.crc32c(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test func layerNamesRoundTrip() {
        let keys = KeyRange(first: key(1), last: key(99))
        let d = LayerName(kind: .delta, keys: keys, lsnStart: Lsn(5), lsnEnd: Lsn(0x1234), generation: 3)
        let i = LayerName(kind: .image, keys: keys, lsnStart: Lsn(9), lsnEnd: Lsn(9), generation: 4)
        #expect(LayerName(parsing: d.description) == d)
        #expect(LayerName(parsing: i.description) == i)
        #expect(LayerName(parsing: "index.json") == nil)
        #expect(LayerName(parsing: d.description + ".___temp") == nil)
    }

    @Test func lifecycleTransitions() {
        #expect(TenantLifecycle.next(.loading, on: .loaded) == .active)
        #expect(TenantLifecycle.next(.active, on: .resetRequested) == .resetting)
        #expect(TenantLifecycle.next(.resetting, on: .loadFailed("x")) == .broken(reason: "x"))
        #expect(TenantLifecycle.next(.broken(reason: "x"), on: .resetRequested) == .resetting)
        #expect(TenantLifecycle.next(.resetting, on: .resetRequested) == nil)
        #expect(TenantLifecycle.next(.active, on: .loaded) == nil)
        #expect(TenantLifecycle.next(.stopped, on: .resetRequested) == nil)
        #expect(TenantLifecycle.transition(.active, on: .stop)?.actions == [.stopCompaction, .failWaiters])
        #expect(TenantLifecycle.transition(.broken(reason: "x"), on: .resetRequested)?.actions == [.stopCompaction, .failWaiters])
        #expect(TenantLifecycle.transition(.resetting, on: .loaded) == TenantTransition(from: .resetting, to: .active, actions: [.allowCompaction]))
        #expect(TenantLifecycle.transition(.resetting, on: .resetAbandoned(restoring: .active))?.actions == [.allowCompaction])
        #expect(TenantLifecycle.transition(.loading, on: .loadFailed("x"))?.actions == [])
        #expect(TenantLifecycle.transition(.stopped, on: .stop) == nil)
        #expect(TenantLifecycle.admission(.active, tenant: testTenant) == nil)
        #expect(TenantLifecycle.admission(.resetting, tenant: testTenant) == .tenantUnavailable(testTenant, state: "resetting"))
    }
}

/// The group-commit queue as pure state: admission order, who starts the leader, what it does next.
@Suite("Commit queue")
struct CommitQueueTests {
    @Test func putsQueueInLsnOrderAndOneLeaderTakesThemAll() {
        var q = CommitQueue<Int>()
        guard case .queued(startLeader: true) = q.admit(1, first: Lsn(1), last: Lsn(5), tenant: testTenant) else {
            Issue.record("the first put starts the leader")
            return
        }
        guard case .queued(startLeader: false) = q.admit(2, first: Lsn(6), last: Lsn(6), tenant: testTenant) else {
            Issue.record("a put behind a running leader rides with it")
            return
        }
        guard case .refused(.invalidArgument(let why)) = q.admit(3, first: Lsn(6), last: Lsn(9), tenant: testTenant) else {
            Issue.record("a put not above the accepted LSNs is refused")
            return
        }
        #expect(why.contains("LSN \(Lsn(6)) is not above the last record LSN \(Lsn(6))"), "\(why)")
        #expect(q.requestRetire(below: Lsn(3)) == false)  // the leader runs: it takes the request
        #expect(q.runningEpoch == 0)
        guard case .retire(below: Lsn(3)) = q.next() else { Issue.record("WAL deletion goes first"); return }
        guard case .commit(let batch) = q.next() else { Issue.record("then every queued put, as one commit"); return }
        #expect(batch == [1, 2])
        guard case .idle(epoch: 1) = q.next() else { Issue.record("then the leader stops"); return }
        #expect(q.runningEpoch == nil)
        #expect(q.requestRetire(below: Lsn(4)) == true)  // no leader: the request starts one
    }

    @Test func aFailedCommitHandsBackTheQueueAndRewindsAdmission() {
        var q = CommitQueue<Int>()
        _ = q.admit(1, first: Lsn(1), last: Lsn(2), tenant: testTenant)
        guard case .commit = q.next() else { Issue.record("the leader takes put 1"); return }
        _ = q.admit(2, first: Lsn(3), last: Lsn(4), tenant: testTenant)
        #expect(q.failQueued(lastDurable: Lsn(0)) == [2])
        #expect(q.reservedLsn == Lsn(0))
        guard case .queued = q.admit(3, first: Lsn(1), last: Lsn(1), tenant: testTenant) else {
            Issue.record("after the failure a put is checked against what is durable")
            return
        }
        q.restart(at: Lsn(10))
        guard case .refused = q.admit(4, first: Lsn(10), last: Lsn(10), tenant: testTenant) else {
            Issue.record("after a reload, puts continue above last_record_lsn")
            return
        }
    }
}
