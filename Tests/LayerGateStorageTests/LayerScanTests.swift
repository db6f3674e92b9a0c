import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// A merge reads its inputs' values in file order, in windows of many blocks
/// past the page cache (`LayerScan`).
@Suite("Layer scans")
struct LayerScanTests {
    /// With the smallest window (4 blocks: many inputs share the budget),
    /// images and deltas of every length, many of them across a window's end,
    /// read the same as through the page cache, in version 1 and 2 files; the
    /// file is read in windows, not a block at a time, and the page cache is
    /// not touched.
    @Test(arguments: [LayerFormat.Version.v1, .v2])
    func valuesAcrossWindowEndsReadAsThroughThePageCache(version: LayerFormat.Version) throws {
        let disk = SimulatedDisk(directIO: true)
        let dir = try DirectoryHandle(fs: disk, path: "")
        var records: [Record] = []
        for k in 0..<150 as Range<UInt32> {
            let length = 50 + Int(k) * 97 % 3000
            records.append(k % 3 == 0 ? image(key(k), 10)
                : delta(key(k), 10, offset: Int(k) * 61 % (8192 - length), bytes: Array(repeating: UInt8(k), count: length)))
        }
        let w = try LayerWriter(directory: dir, tenant: testTenant, kind: .delta, lsnStart: Lsn(10), lsnEnd: Lsn(10),
                                generation: 1, failpoints: Failpoints(), mechanism: .automatic, version: version)
        for r in records { try w.append(key: r.key, lsn: r.lsn, value: r.value) }
        let d = try w.finish()
        let cache = PageCache(capacity: 64)
        let files = OpenFileTable(fs: disk, capacity: 2, directReads: true)
        let reader = try LayerReader(directory: dir, name: d.name, tenant: testTenant, cache: cache, openFiles: files)
        let entries = try reader.allEntries()
        let scan = LayerScan(reader, inputs: 100_000)
        let (readsBefore, cachedBefore) = (disk.operationCounts["read"] ?? 0, cache.stats.misses)
        var crossing = 0
        for (i, e) in entries.enumerated() {
            let blocks = reader.blocks(of: e)
            if blocks.count > 1, blocks.lowerBound / 4 != (blocks.upperBound - 1) / 4 { crossing += 1 }
            #expect(try scan.value(of: e) == records[i].value, "value \(i)")
        }
        let reads = (disk.operationCounts["read"] ?? 0) - readsBefore
        let dataBlocks = reader.dataBlocks.count
        #expect(crossing > 5, "values across a 4-block boundary: \(crossing)")
        #expect(reads <= dataBlocks / 2, "\(reads) reads for \(dataBlocks) blocks of values")
        #expect(cache.stats.misses == cachedBefore, "a scan leaves the page cache alone")
        #expect(files.stats.fallbacks == 0, "every window read is aligned for O_DIRECT")
    }

    /// A merge over six layer files read directly: a few window reads per
    /// input, not one read per block (a block at a time it took 4.4 s to
    /// compact 500 MB with direct reads, 2.6 s through the OS page cache),
    /// and the pages after it match the model.
    @Test func aMergeReadsEachInputInAFewReads() async throws {
        let disk = SimulatedDisk(directIO: true)
        let (cold, model) = try await DirectLayerReadTests.coldFixture(disk, directReads: true)
        let t = try cold.tenant()
        let inputs = t.status().layers
        #expect(inputs.count == 6)
        let before = disk.operationCounts["read"] ?? 0
        let r = try await t.compact()
        let reads = (disk.operationCounts["read"] ?? 0) - before
        #expect(r.layersRemoved == 6)
        // Block by block this was over 150 reads; now per input: its index block and one window,
        // and per output its summary and fences when it is opened.
        #expect(reads <= 6 * 3 + 2 * r.layersCreated, "\(reads) reads")
        #expect(cold.manager.storage.openFiles.stats.fallbacks == 0)
        try await DirectLayerReadTests.readBack(t, model)
        await cold.manager.shutdown()
    }

    /// A value whose bytes were damaged on disk fails the merge with an error
    /// naming its layer and the value, and leaves the tenant as it was.
    @Test func aDamagedValueFailsTheMergeNamingItsLayer() async throws {
        let (f, victim, path) = try await DiskFixture.fourL0Layers()
        var bytes = try f.readFile(path)
        bytes[LayerFormat.blockSize * 3 + 100] ^= 0xff  // inside the third value
        try f.writeFile(path, bytes)
        let g = try await DiskFixture.open(f.disk, config: f.config)
        let u = try g.tenant()
        let layers = u.status().layers
        await #expect { _ = try await u.compact() } throws: { error in
            guard case .corruptLayer(let file, let reason) = error as? StorageError else { return false }
            return file.hasSuffix(victim) && reason.contains("checksum mismatch")
        }
        #expect(u.status().layers.map(\.name) == layers.map(\.name))
        #expect(u.status().compactionFailures == 1)
        await g.manager.shutdown()
    }
}
