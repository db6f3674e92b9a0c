import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// Writes a layer of `records` (sorted here) and returns its descriptor.
func writeLayer(
    _ dir: String, _ records: [Record], kind: LayerName.Kind = .delta, generation: UInt32 = 1,
    failpoints: Failpoints = Failpoints(), mechanism: GatedPublish.Mechanism = .automatic,
    version: LayerFormat.Version = .written
) throws -> LayerDescriptor {
    let sorted = records.sorted { ($0.key, $0.lsn.rawValue) < ($1.key, $1.lsn.rawValue) }
    let lo = records.map(\.lsn).min()!, hi = records.map(\.lsn).max()!
    let w = try LayerWriter(directory: .at(dir), tenant: testTenant, kind: kind, lsnStart: lo, lsnEnd: hi,
                            generation: generation, failpoints: failpoints, mechanism: mechanism, version: version)
    for r in sorted { try w.append(key: r.key, lsn: r.lsn, value: r.value) }
    return try w.finish()
}

func readAll(_ reader: LayerReader) throws -> [Record] {
    try reader.allEntries().map { Record(key: $0.key, lsn: $0.lsn, value: try reader.value(of: $0)) }
}

func tempFiles(_ dir: TempDir) -> [String] { dir.files().filter { $0.hasSuffix("___temp") } }

@Suite("Layer files: format, validation, gated publish, cleanup")
struct LayerFileTests {
    @Test(arguments: [LayerFormat.Version.v1, .v2])
    func deltaLayerRoundTripsManyValuesAcrossIndexBlocks(version: LayerFormat.Version) throws {
        let dir = TempDir()
        var records: [Record] = []
        for b in 0..<300 as Range<UInt32> {
            records.append(image(key(b), 10))
            records.append(delta(key(b), 11, offset: Int(b), bytes: [UInt8(b & 0xFF), 1, 2]))
        }
        let d = try writeLayer(dir.path, records, version: version)
        #expect(d.size % 8192 == 0)
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 64))
        let back = try readAll(reader)
        #expect(back == records.sorted { ($0.key, $0.lsn.rawValue) < ($1.key, $1.lsn.rawValue) })
        // Point lookups: newest first, bounded by the LSN.
        var seen: [Lsn] = []
        try reader.visit(key: key(150), upTo: Lsn(11)) { e in seen.append(e.lsn); return true }
        #expect(seen == [Lsn(11), Lsn(10)])
        seen = []
        try reader.visit(key: key(150), upTo: Lsn(10)) { e in seen.append(e.lsn); return true }
        #expect(seen == [Lsn(10)])
        seen = []
        try reader.visit(key: key(9999), upTo: Lsn(11)) { e in seen.append(e.lsn); return true }
        #expect(seen.isEmpty)
        #expect(tempFiles(dir).isEmpty)
    }

    /// Version 1's blob headers placed at every offset around a block boundary,
    /// including a header that ends exactly where the block does (its payload
    /// starts in the next block) and one that would straddle it (padding);
    /// version 2's values around the same boundary (8 bytes earlier: no
    /// headers), and an image after them.
    @Test(arguments: [LayerFormat.Version.v1, .v2])
    func blobsAroundBlockBoundariesReadBack(version: LayerFormat.Version) async throws {
        // The first value starts at 8192; one patch of n bytes is a blob of 16 + n in
        // version 1 (the second header lands at 8192 + 16 + n), a value of 8 + n in version 2.
        for n in 8150...8176 {
            let dir = TempDir()
            let records = [
                delta(key(1), 5, offset: 0, bytes: [UInt8](repeating: 0xA5, count: n), willInit: true),
                delta(key(1), 6, offset: 8, bytes: Array("after the boundary".utf8)),
                image(key(2), 6),
            ]
            let d = try writeLayer(dir.path, records, version: version)
            let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 16))
            #expect(try readAll(reader) == records, "patch of \(n) bytes")
            var model = PageModel()
            model.apply(records)
            var map = LayerMap()
            map.insert(reader)
            let page = try ReadPath.reconstruct(key: key(1), lsn: Lsn(6), open: InMemoryLayer(startLsn: Lsn(7)), frozen: [], layers: map)
            #expect(page == model.page(key(1), at: Lsn(6)), "patch of \(n) bytes")
        }
    }

    /// Thousands of values of random sizes: every blob reads back through the cache.
    @Test(arguments: [21] as [UInt64], [LayerFormat.Version.v1, .v2])
    func randomValueSizesRoundTrip(seed: UInt64, version: LayerFormat.Version) throws {
        let dir = TempDir()
        var rng = SeededRandom(seed: seed)
        var records: [Record] = []
        for i in 0..<3000 {
            let k = key(UInt32(i / 3))
            let lsn = UInt64(10 + i % 3)
            if Int.random(in: 0..<10, using: &rng) == 0 {
                records.append(image(k, lsn, seed: rng.next()))
            } else {
                let patches = (0..<Int.random(in: 1...3, using: &rng)).map { _ in
                    let len = Int.random(in: 1...Int.random(in: 1...8192, using: &rng), using: &rng)
                    return Patch(offset: Int.random(in: 0...(pageSize - len), using: &rng),
                                 data: (0..<len).map { _ in UInt8.random(in: 0...255, using: &rng) })
                }
                records.append(Record(key: k, lsn: Lsn(lsn), value: .delta(Delta(willInit: false, patches: patches))))
            }
        }
        let d = try writeLayer(dir.path, records, version: version)
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 32))
        #expect(try readAll(reader) == records)
    }

    /// Version 2 starts an image at a block boundary when the padding that
    /// takes is at most a quarter block (`imageAlignmentSlack`), and packs it
    /// after the delta before it otherwise; either way it reads back whole.
    @Test func imagesStartAtABlockBoundaryWhenThatTakesLittlePadding() throws {
        let dir = TempDir()
        let records = [
            image(key(1), 10),                                                           // block 1
            delta(key(1), 11, offset: 0, bytes: [UInt8](repeating: 7, count: 7000)),    // 7,008 bytes from 16384
            image(key(2), 10),                                                           // 1,184 bytes of padding: block 3
            delta(key(2), 11, offset: 5, bytes: [1, 2, 3]),                             // 11 bytes from 32768
            image(key(3), 10),                                                           // 8,181 would be too many: packed
            image(key(4), 10),
        ]
        let d = try writeLayer(dir.path, records)
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 32))
        let offsets = try reader.allEntries().map(\.offset)
        #expect(offsets == [8192, 16384, 24576, 32768, 32779, 32779 + 8192])
        #expect(try readAll(reader) == records)
    }

    /// The padding rule at its edge: a delta that leaves exactly 2 KiB to the
    /// block's end has the image after it aligned; one byte less, packed.
    @Test(arguments: [2048, 2049])
    func imageAlignmentSlackIsAQuarterBlock(room: Int) throws {
        let dir = TempDir()
        // A delta of one patch of n bytes is 8 + n bytes; it starts at 16384, after key 1's image.
        let patch = 8192 - room - 8
        let records = [image(key(1), 10), delta(key(1), 11, offset: 0, bytes: [UInt8](repeating: 3, count: patch)), image(key(2), 10)]
        let d = try writeLayer(dir.path, records)
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 8))
        let image = try #require(try reader.allEntries().last)
        #expect(image.offset == (room <= LayerFormat.imageAlignmentSlack ? 24576 : UInt64(24576 - room)))
        #expect(try readAll(reader) == records)
    }

    @Test func imageLayerRoundTrips() throws {
        let dir = TempDir()
        let records = (0..<50 as Range<UInt32>).map { image(key($0), 42) }
        let d = try writeLayer(dir.path, records, kind: .image)
        #expect(d.name.kind == .image && d.name.lsnStart == Lsn(42))
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 8))
        #expect(try readAll(reader) == records)
    }

    @Test(arguments: [LayerFormat.Version.v1, .v2])
    func truncatedOrCorruptedFilesGiveErrorsNamingTheFile(version: LayerFormat.Version) throws {
        let dir = TempDir()
        let records = (0..<40 as Range<UInt32>).map { image(key($0), 5) }
        let d = try writeLayer(dir.path, records, version: version)
        let path = dir.path + "/" + d.fileName
        let original = try Data(contentsOf: URL(fileURLWithPath: path))

        func expectCorrupt(_ mutate: (inout Data) -> Void, readValues: Bool = false) throws {
            var bytes = original
            mutate(&bytes)
            try bytes.write(to: URL(fileURLWithPath: path))
            do {
                let r = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 16))
                _ = try readAll(r)
                Issue.record("expected a corruption error")
            } catch let e as StorageError {
                guard case .corruptLayer(let file, _) = e else { Issue.record("wrong error \(e)"); return }
                #expect(file == path)
            }
        }
        try expectCorrupt { $0 = $0.prefix(8192 * 3) }                 // truncated
        try expectCorrupt { $0 = $0.prefix(100) }                      // less than a block
        try expectCorrupt { $0[0] ^= 0xFF }                            // magic
        try expectCorrupt { $0[20] ^= 0x01 }                           // summary checksum
        try expectCorrupt { $0[8192 + 100] ^= 0x01 }                   // a value's bytes
        try expectCorrupt { $0[$0.count - 8192 * 2 + 50] ^= 0x01 }     // an index block
        try expectCorrupt { $0[$0.count - 8192 + 20] ^= 0x01 }         // the fences
        // Untouched bytes read fine.
        try original.write(to: URL(fileURLWithPath: path))
        let r = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 16))
        #expect(try readAll(r) == records)
    }

    @Test func aLayerOfAnotherTenantOrWithTheWrongNameIsRejected() throws {
        let dir = TempDir()
        let d = try writeLayer(dir.path, [image(key(1), 5)])
        let other = try TenantId(parsing: "ffffffffffffffffffffffffffffffff")
        #expect(throws: StorageError.self) {
            try LayerReader(directory: dir.path, name: d.name, tenant: other, cache: PageCache(capacity: 4))
        }
        var renamed = d.name
        renamed.lsnEnd = Lsn(6)
        rename(dir.path + "/" + d.fileName, dir.path + "/" + renamed.description)
        #expect(throws: StorageError.self) {
            try LayerReader(directory: dir.path, name: renamed, tenant: testTenant, cache: PageCache(capacity: 4))
        }
    }

    /// Invariant 1, and the fixed version of Neon's `image_layer_rewrite`:
    /// writing an image layer whose name exists fails, the original file is
    /// bit-identical, the temp file is gone, and reads through the cache still
    /// return the original data.
    @Test(arguments: [GatedPublish.Mechanism.automatic, .linkUnlink])
    func invariant1_imageLayerRewriteIsRefused(mechanism: GatedPublish.Mechanism) throws {
        let dir = TempDir()
        let cache = PageCache(capacity: 64)
        let originals = (0..<20 as Range<UInt32>).map { image(key($0), 100, seed: UInt64($0)) }
        let d = try writeLayer(dir.path, originals, kind: .image, mechanism: mechanism)
        let path = dir.path + "/" + d.fileName
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)
        #expect(try readAll(reader) == originals)  // now cached

        // Same keys and LSN, different bytes: the same name.
        let rewrite = (0..<20 as Range<UInt32>).map { image(key($0), 100, seed: 1000 + UInt64($0)) }
        #expect(throws: StorageError.layerExists(file: path)) {
            _ = try writeLayer(dir.path, rewrite, kind: .image, mechanism: mechanism)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        #expect(tempFiles(dir).isEmpty)
        #expect(try readAll(reader) == originals)
        let fresh = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)
        #expect(fresh.fileId != reader.fileId)
        #expect(try readAll(fresh) == originals)
    }

    @Test func invariant1_publishedFilesAreReadOnlyToTheProcess() throws {
        // The reader opens O_RDONLY: a write through its descriptor fails.
        let dir = TempDir()
        let d = try writeLayer(dir.path, [image(key(1), 5)])
        let f = try RawFile.openReadOnly(dir.path + "/" + d.fileName)
        #expect(throws: StorageError.self) { try f.write([1, 2, 3], at: 0) }
    }

    /// Invariant 2: every way a write can fail leaves no temp file and no
    /// published file, for delta and image layers alike.
    @Test(arguments: [LayerName.Kind.delta, .image], ["layer-writer-put-value", "layer-writer-before-finish", "layer-writer-before-publish"])
    func invariant2_failpointsLeaveNothingBehind(kind: LayerName.Kind, failpoint: String) throws {
        let dir = TempDir()
        let fp = Failpoints()
        try fp.enable(environment: "\(failpoint)=return")
        let records = (0..<10 as Range<UInt32>).map { image(key($0), 7) }
        #expect(throws: StorageError.failpoint(failpoint)) { _ = try writeLayer(dir.path, records, kind: kind, failpoints: fp) }
        #expect(dir.files().isEmpty)
        // The same layer can be written once the failure is gone.
        try fp.configure(failpoint, .off)
        _ = try writeLayer(dir.path, records, kind: kind, failpoints: fp)
        #expect(dir.files().count == 1)
    }

    @Test(arguments: [LayerName.Kind.delta, .image])
    func invariant2_abandonedAndCancelledWritersLeaveNothing(kind: LayerName.Kind) async throws {
        let dir = TempDir()
        do {
            let w = try LayerWriter(directory: .at(dir.path), tenant: testTenant, kind: kind, lsnStart: Lsn(3), lsnEnd: Lsn(3),
                                    generation: 1, failpoints: Failpoints())
            try w.append(key: key(1), lsn: Lsn(3), value: .image(page(1)))
            #expect(dir.files().count == 1)
        }  // dropped without finish
        #expect(dir.files().isEmpty)

        let path = dir.path
        let task = Task {
            let w = try LayerWriter(directory: .at(path), tenant: testTenant, kind: kind, lsnStart: Lsn(3), lsnEnd: Lsn(3),
                                    generation: 1, failpoints: Failpoints())
            while !Task.isCancelled { await Task.yield() }
            try w.append(key: key(1), lsn: Lsn(3), value: .image(page(1)))
            _ = try w.finish()
        }
        try await Task.sleep(for: .milliseconds(20))
        task.cancel()
        let result = await task.result
        #expect(throws: (any Error).self) { try result.get() }
        #expect(dir.files().isEmpty)
    }

    @Test func invariant2_aTakenNameLeavesNoTempForDeltasEither() throws {
        let dir = TempDir()
        let records = [delta(key(1), 5, offset: 0, bytes: [1], willInit: true), delta(key(1), 6, offset: 1, bytes: [2])]
        let d = try writeLayer(dir.path, records)
        #expect(throws: StorageError.layerExists(file: dir.path + "/" + d.fileName)) { _ = try writeLayer(dir.path, records) }
        #expect(dir.files() == [d.fileName])
    }
}

extension GatedPublish.Mechanism: CustomTestStringConvertible {
    public var testDescription: String { self == .automatic ? "renameat2" : "link+unlink" }
}
