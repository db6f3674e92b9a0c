import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// Random records against a plain model.
func randomBatch(_ rng: inout SeededRandom, nextLsn: inout UInt64, keys: Int) -> [Record] {
    var batch: [Record] = []
    var usedAtLsn = Set<PageKey>()
    for _ in 0..<Int.random(in: 1...8, using: &rng) {
        if Bool.random(using: &rng) { nextLsn += UInt64.random(in: 1...3, using: &rng); usedAtLsn = [] }
        let k = key(UInt32.random(in: 0..<UInt32(keys), using: &rng), rel: 1000 + UInt32.random(in: 0...1, using: &rng))
        guard usedAtLsn.insert(k).inserted else { continue }
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<2:
            batch.append(image(k, nextLsn, seed: rng.next()))
        case 2:
            batch.append(delta(k, nextLsn, offset: Int.random(in: 0..<8000, using: &rng), bytes: [1, 2, 3], willInit: true))
        default:
            let patches = (0..<Int.random(in: 1...4, using: &rng)).map { _ in
                let len = Int.random(in: 1...64, using: &rng)
                return Patch(offset: Int.random(in: 0...(pageSize - len), using: &rng),
                             data: (0..<len).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
            batch.append(Record(key: k, lsn: Lsn(nextLsn), value: .delta(Delta(willInit: false, patches: patches))))
        }
    }
    return batch
}

@Suite("Read path against a model")
struct ReadPathModelTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomIngestFlushAndReadsMatchTheModel(seed: UInt64) async throws {
        let f = try await TenantFixture.make(checkpointBytes: 256 << 10, cacheSlots: 128)
        var t = f.tenant
        var manager = f.manager
        var rng = SeededRandom(seed: seed)
        var model = PageModel()
        var lsn: UInt64 = 1
        let keyCount = 40
        var checked = 0
        for step in 0..<600 {
            let batch = randomBatch(&rng, nextLsn: &lsn, keys: keyCount)
            lsn += 1
            guard !batch.isEmpty else { continue }
            model.apply(batch)
            _ = try await t.put(batch)
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<4: try await t.flush()
            case 4: _ = try await t.reset(dropCache: Bool.random(using: &rng))
            case 5 where step % 3 == 0: (manager, t) = try await f.reopenKeepingManager(manager)
            default: break
            }
            for _ in 0..<5 {
                let k = key(UInt32.random(in: 0..<UInt32(keyCount), using: &rng), rel: 1000 + UInt32.random(in: 0...1, using: &rng))
                let at = Lsn(UInt64.random(in: 1...lsn, using: &rng))
                let want = model.page(k, at: at)
                let last = t.status().lastRecordLsn
                guard at <= last else { continue }
                let got = await readResult(t, k, at)
                switch got {
                case .success(let bytes): #expect(bytes == want, "\(k) at \(at), seed \(seed)")
                case .failure(.pageNotFound): #expect(want == nil, "\(k) at \(at) missing, seed \(seed)")
                case .failure(let e): Issue.record("\(k) at \(at): \(e)")
                }
                checked += 1
            }
        }
        #expect(model.history.values.reduce(0) { $0 + $1.count } > 1500)
        #expect(t.status().layers.count > 5)
        #expect(checked >= 2500)
        await manager.shutdown()
    }
}

extension TenantFixture {
    /// Restart with a given live manager (the fixture's own may be closed already).
    func reopenKeepingManager(_ current: TenantManager) async throws -> (TenantManager, Tenant) {
        await current.shutdown()
        let m = try TenantManager(dataDirectory: dir.path, config: current.config, cache: cache, failpoints: failpoints,
                                  logger: quietLogger())
        try await m.loadAll()
        return (m, try m.tenant(testTenant))
    }
}
