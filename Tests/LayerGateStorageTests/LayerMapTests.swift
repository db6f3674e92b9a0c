import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

@Suite("Layer map")
struct LayerMapTests {
    /// Invariant 3: a name the layer map already holds is never inserted
    /// again; the process stops rather than serve from two files.
    @Test func invariant3_duplicateInsertStopsTheProcess() async {
        await #expect(processExitsWith: .failure) {
            let dir = TempDir("exit-duplicate-insert")
            let cache = PageCache(capacity: 8)
            let d = try writeLayer(dir.path, [image(key(1), 5)])
            var map = LayerMap()
            map.insert(try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache))
            map.insert(try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache))
        }
        TemporaryDirectory.removeAll(label: "exit-duplicate-insert")
    }

    @Test func invariant3_failedPublishLeavesTheCallerNoLayer() async throws {
        // The flush path: a publish that fails (failpoint before the index)
        // must not put the layer in the map, and must not leave its file.
        let f = try await TenantFixture.make()
        try f.failpoints.configure("flush-before-index", .return)
        _ = try await f.tenant.put([image(key(1), 5)])
        await #expect(throws: StorageError.failpoint("flush-before-index")) { try await f.tenant.flush() }
        #expect(f.tenant.status().layers.isEmpty)
        #expect(f.layerFiles().isEmpty)
        try f.failpoints.configure("flush-before-index", .off)
        try await f.tenant.flush()
        #expect(f.tenant.status().layers.count == 1)
        #expect(try await f.tenant.getPage(key: key(1), lsn: Lsn(5)).page == image(key(1), 5).valueBytes)
        await f.manager.shutdown()
    }

    /// Invariant 4's second half: a removed layer's file goes only when no
    /// reader holds it any more, and never takes a newer file of the same name with it.
    @Test func invariant4_removedLayerIsDeletedOnlyWhenNoReaderHoldsIt() throws {
        let dir = TempDir()
        let cache = PageCache(capacity: 8)
        let d = try writeLayer(dir.path, [image(key(1), 5)])
        let path = dir.path + "/" + d.fileName
        var map = LayerMap()
        map.insert(try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache))
        var inFlight: LayerReader? = map.layers[0].resident  // a read holding the layer
        map.remove(named: d.fileName)?.deleteWhenUnused()
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(try readAll(inFlight!) == [image(key(1), 5)])
        inFlight = nil
        #expect(!FileManager.default.fileExists(atPath: path))

        // A file that took the name meanwhile is someone else's: it stays.
        let again = try writeLayer(dir.path, [image(key(1), 5)])
        var old: LayerReader? = try LayerReader(directory: dir.path, name: again.name, tenant: testTenant, cache: cache)
        old!.deleteWhenUnused()
        unlink(path)
        let replacement = try writeLayer(dir.path, [image(key(1), 5)])
        old = nil
        #expect(FileManager.default.fileExists(atPath: dir.path + "/" + replacement.fileName))
    }

    @Test func ordersNewestFirstWithImagesBeforeDeltasAtTheSameEnd() throws {
        let dir = TempDir()
        let cache = PageCache(capacity: 8)
        let a = try writeLayer(dir.path, [image(key(1), 1), image(key(1), 10)])
        let b = try writeLayer(dir.path, [image(key(1), 10)], kind: .image)
        let c = try writeLayer(dir.path, [image(key(1), 11), image(key(1), 20)])
        var map = LayerMap()
        for d in [a, b, c] { map.insert(try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: cache)) }
        #expect(map.layers.map(\.descriptor.name) == [c.name, b.name, a.name])
        #expect(map.remove(named: b.fileName) != nil)
        #expect(!map.contains(b.fileName) && map.count == 2)
    }
}

extension Record {
    var valueBytes: [UInt8]? {
        if case .image(let b) = value { return b }
        return nil
    }
}
