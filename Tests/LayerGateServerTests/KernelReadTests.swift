import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// GetPage misses read by the epoll loop itself through io_uring
/// (`--miss-reads uring`, direct layer reads; buffered ones stay with read
/// threads), against the real layergated: a page cache far
/// smaller than the layers, the OS page cache of the layer files dropped,
/// eight readers checking every page while compactions and resets replace
/// the layer files (and so the page cache's file ids) under them.
@Suite("GetPage misses read by the event loop", .serialized)
struct KernelReadTests {
    static let keys: UInt32 = 1500

    @Test(arguments: ["direct", "buffered"], ["uring", "threads"])
    func coldPagesAreRightWhileLayersAreReplaced(layerReads: String, missReads: String) async throws {
        let dir = ServerDir()
        let port = try TCPListener().port
        let args = ["--metrics-listen", "127.0.0.1:\(port)", "--checkpoint-distance-mib", "1", "--compaction-period-s", "3600",
                    "--page-cache-mib", "1", "--layer-reads", layerReads, "--miss-reads", missReads]
        let server = try await ServerProcess(dir: dir, extraArgs: args)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        // Two versions of every page, each record at an LSN of its own: version 1 at 1…1500, version 2 above.
        for version in 0..<2 {
            for start in stride(from: UInt32(0), to: Self.keys, by: 50) {
                let records = (start..<min(start + 50, Self.keys)).map { wimage($0, Self.lsn($0, version: version)) }
                _ = try await c.putRecords(tenant: tenantA, records)
            }
        }
        await c.close()
        #expect(await server.stop() == 0)
        // A cold start: an empty page cache, and (buffered) layer files out of the OS page cache.
        Self.dropDirectoryFromOsCache(dir.data + "/tenants/" + tenantA)
        let cold = try await ServerProcess(dir: dir, extraArgs: args)
        let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
            for reader in 0..<8 {
                group.addTask { try await Self.readAll(cold, seed: UInt32(reader)) }
            }
            // Meanwhile the layer files change: image layers, then reloads that reopen every file.
            group.addTask {
                let admin = try await cold.client()
                for round in 0..<3 {
                    try await Task.sleep(for: .milliseconds(150))
                    if round == 1 { _ = try await admin.compact(tenant: tenantA, forceImageLayers: true) }
                    _ = try await admin.resetTenant(tenantA, dropCache: true)
                }
                await admin.close()
                return 0
            }
            return try await group.reduce(0, +)
        }
        #expect(wrong == 0, "pages with the wrong bytes")

        let scrape = try await Scrape(port: port)
        let misses = scrape.value("layergate_page_cache_misses_total") ?? 0
        let byLoop = scrape.value("layergate_page_cache_loop_reads_total") ?? -1
        #expect(misses > 1000, "a 1 MiB page cache over 24 MiB of layers should miss")
        let nio = ProcessInfo.processInfo.environment["LAYERGATE_SERVER_ARGS"]?.contains("nio") ?? false
        if missReads == "uring" && layerReads == "direct" && !nio && Self.ioUringAllowed {
            // Most misses: the rest are blocks read by compaction, and after a reset by the loads of layers.
            #expect(byLoop > misses / 4, "misses \(misses), read by the loop \(byLoop)")
        } else {
            #expect(byLoop == 0, "misses \(misses), read by the loop \(byLoop)")
        }
        #expect(await cold.stop() == 0)
        #expect(!cold.log.contains("error"), "\(cold.log)")
    }

    /// GetPages that arrive together and miss are read together: the loop
    /// hands the kernel all the reads one pass started in one submission (one
    /// doorbell of the disk), not one each. One client sends batches of 100
    /// cold pages; every page must be right, and the reads per submission
    /// (the metrics' ratio) well above one. Entering each read on its own, as
    /// before, gives exactly one.
    @Test func missesThatArriveTogetherShareOneSubmission() async throws {
        let nio = ProcessInfo.processInfo.environment["LAYERGATE_SERVER_ARGS"]?.contains("nio") ?? false
        guard Self.ioUringAllowed, !nio else {
            print("skip: no io_uring here, or the SwiftNIO loop, which reads misses on threads")
            return
        }
        let dir = ServerDir()
        let port = try TCPListener().port
        let args = ["--metrics-listen", "127.0.0.1:\(port)", "--checkpoint-distance-mib", "1", "--compaction-period-s", "3600",
                    "--page-cache-mib", "1", "--layer-reads", "direct", "--miss-reads", "uring"]
        try await Self.writeOneVersion(dir, args: args)

        let cold = try await ServerProcess(dir: dir, extraArgs: args)
        let r = try await cold.client()
        var wrong = 0
        for start in stride(from: UInt32(0), to: Self.keys, by: 100) {
            let keys = Array(start..<min(start + 100, Self.keys))
            let got = await r.getPages(tenant: tenantA, keys: keys.map { wkey($0) })
            for (key, outcome) in zip(keys, got) {
                guard case .success(let page) = outcome, page.page == wpage(UInt64(key) << 32 | Self.lsn(key, version: 0)) else {
                    wrong += 1
                    continue
                }
            }
        }
        await r.close()
        #expect(wrong == 0)
        let scrape = try await Scrape(port: port)
        let reads = scrape.value("layergate_page_cache_loop_reads_total") ?? 0
        let submissions = scrape.value("layergate_loop_read_submissions_total") ?? 0
        #expect(reads > 1000 && submissions > 0, "blocks read by the loop \(reads), submissions \(submissions)")
        #expect(reads >= 4 * submissions, "blocks read by the loop \(reads), submissions \(submissions)")
        #expect(await cold.stop() == 0)
    }

    /// Damage the loop's reads meet: a byte of a page in every layer file
    /// (the page's checksum fails after the blocks are installed) and a byte of
    /// an index block (the install's own check fails, and the read goes the
    /// ordinary way). Each such GetPage is an error naming the layer, never
    /// wrong bytes, and every other page is read right.
    @Test(arguments: ["uring", "threads"])
    func damagedBlocksAreErrorsNotWrongBytes(missReads: String) async throws {
        let dir = ServerDir()
        let args = ["--checkpoint-distance-mib", "1", "--compaction-period-s", "3600", "--page-cache-mib", "1",
                    "--layer-reads", "direct", "--miss-reads", missReads]
        try await Self.writeOneVersion(dir, args: args)
        let tenantDir = dir.data + "/tenants/" + tenantA
        let layers = try FileManager.default.contentsOfDirectory(atPath: tenantDir).filter { $0.contains("__") }.sorted()
        #expect(layers.count >= 4, "\(layers)")
        for (i, name) in layers.enumerated() {
            let fd = open(tenantDir + "/" + name, O_RDWR)
            #expect(fd >= 0)
            defer { close(fd) }
            Self.flipByte(fd, at: 8192 + 100)  // in the first value's page
            if i == 0 {
                // The summary's index start block: a big-endian u64 at byte 95.
                var raw = [UInt8](repeating: 0, count: 8)
                #expect(pread(fd, &raw, 8, 95) == 8)
                let indexStart = raw.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                Self.flipByte(fd, at: Int(indexStart) * 8192 + 50)
            }
        }

        let cold = try await ServerProcess(dir: dir, extraArgs: args)
        let r = try await cold.client()
        var (right, failed, wrong) = (0, 0, 0)
        for key in 0..<Self.keys {
            do {
                let got = try await r.getPage(tenant: tenantA, key: wkey(key))
                if got.page == wpage(UInt64(key) << 32 | Self.lsn(key, version: 0)) { right += 1 } else { wrong += 1 }
            } catch let ClientError.server(code, message) {
                failed += 1
                #expect(code == .internal && message.contains("layer") && !message.contains(dir.path), "\(code.name): \(message)")
            }
        }
        await r.close()
        #expect(wrong == 0)
        // One page per damaged file, and the keys of the damaged index block (a few hundred).
        #expect(failed > layers.count && right > Int(Self.keys) / 2, "right \(right), failed \(failed), files \(layers.count)")
        #expect(await cold.stop() == 0)
    }

    private static func flipByte(_ fd: Int32, at offset: Int) {
        var b: UInt8 = 0
        #expect(pread(fd, &b, 1, off_t(offset)) == 1)
        b ^= 0xFF
        #expect(pwrite(fd, &b, 1, off_t(offset)) == 1)
    }

    /// A reader: every key at the latest LSN and as of version 1, in an order
    /// of its own. Returns how many pages had the wrong bytes or LSN.
    private static func readAll(_ server: ServerProcess, seed: UInt32) async throws -> Int {
        let c = try await server.client()
        var wrong = 0
        let step: UInt32 = [7, 11, 13, 17, 19, 23, 29, 31][Int(seed) % 8]  // prime to 1500: each key once
        for i in 0..<keys {
            let key = (i &* step &+ seed * 97) % keys
            let version = Int((i + seed) % 2)
            let lsn = Self.lsn(key, version: version)
            let got: Wire.GetPageResponse
            while true {
                do {
                    got = try await c.getPage(tenant: tenantA, key: wkey(key), lsn: version == 1 ? nil : Self.lsn(keys - 1, version: 0))
                    break
                } catch ClientError.server(.tenantUnavailable, _) {
                    try await Task.sleep(for: .milliseconds(1))  // a reset reloads it
                }
            }
            if got.page != wpage(UInt64(key) << 32 | lsn) || got.lsn < lsn { wrong += 1 }
        }
        await c.close()
        return wrong
    }

    /// A tenant of `keys` pages, one image each (version 0), written by a server that then stops.
    static func writeOneVersion(_ dir: ServerDir, args: [String]) async throws {
        let server = try await ServerProcess(dir: dir, extraArgs: args)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        for start in stride(from: UInt32(0), to: Self.keys, by: 50) {
            _ = try await c.putRecords(tenant: tenantA, (start..<min(start + 50, Self.keys)).map { wimage($0, Self.lsn($0, version: 0)) })
        }
        await c.close()
        #expect(await server.stop() == 0)
    }

    static func lsn(_ key: UInt32, version: Int) -> UInt64 { UInt64(version) * 10_000 + UInt64(key) + 1 }

    /// Every file in `dir` out of the OS page cache: what a cold start finds.
    static func dropDirectoryFromOsCache(_ dir: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            LayerGateTestSupport.dropFromOsCache(dir + "/" + name)
        }
    }

    /// The kernel lets this process make an io_uring (not disabled by sysctl or seccomp).
    static let ioUringAllowed: Bool = {
        let disabled = (try? String(contentsOfFile: "/proc/sys/kernel/io_uring_disabled", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return disabled == nil || disabled == "0"
    }()
}
