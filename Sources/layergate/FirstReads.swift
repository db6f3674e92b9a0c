import ArgumentParser
import Foundation
import LayerGateClient
import LayerGateStorage
import LayerGateWire

/// What a read pays when its layer is not on the local disk: for each layer
/// of the tenant, one GetPage of the layer's first key (which downloads the
/// layer if it is only in remote storage), one of another key in it (the file
/// now local, that page not cached) and the first again (cached). Run it on a
/// server that just attached the tenant, or evicted its layers.
struct FirstReads: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "first-reads", abstract: "Time the first read of each layer against reads once it is local.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Tenant id (32 hex digits).") var tenant: String
    @Option(help: "At most this many layers, newest first.") var layers = 16

    func run() async throws {
        let client = try await global.connect()
        let status = try await client.tenantStatus(tenant)
        guard layers >= 1 else { throw ValidationError("--layers must be at least 1") }
        var rows: [(name: String, size: UInt64, first: Double, local: Double, cached: Double)] = []
        for layer in status.layers.prefix(layers) {
            guard let name = LayerName(parsing: layer.name) else { continue }
            let first = name.keys.first
            var other = first
            if name.keys.last.block > first.block, name.keys.last.relNumber == first.relNumber { other.block = first.block + (name.keys.last.block - first.block) / 2 }
            func timed(_ key: PageKey) async throws -> Double {
                let start = ContinuousClock.now
                do {
                    _ = try await client.getPage(tenant: tenant, key: Wire.PageKey(spcOid: key.spcOid, dbOid: key.dbOid,
                        relNumber: key.relNumber, fork: UInt32(key.fork), block: key.block), lsn: nil)
                } catch ClientError.server(code: .pageNotFound, _) {}  // a key the layer's range holds but no record has
                let d = ContinuousClock.now - start
                return Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
            }
            let a = try await timed(first)
            let b = try await timed(other)
            let c = try await timed(first)
            rows.append((layer.name, layer.size, a, b, c))
        }
        await client.close()
        if global.json {
            global.printJSON(rows.map { ["layer": $0.name, "bytes": "\($0.size)", "first_ms": "\($0.first)", "local_ms": "\($0.local)", "cached_ms": "\($0.cached)"] })
            return
        }
        print("A first read well above the others downloaded its layer; one close to them found it local already.")
        print("     MiB  first read (ms)  other page, local (ms)  same page, cached (ms)  layer")
        for r in rows {
            print(String(format: "%8.1f  %15.2f  %22.3f  %22.3f  ", Double(r.size) / 1048576, r.first, r.local, r.cached) + r.name)
        }
        func median(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.sorted()[v.count / 2] }
        print(String(format: "median: first read %.2f ms, layer local %.3f ms, cached %.3f ms",
                     median(rows.map(\.first)), median(rows.map(\.local)), median(rows.map(\.cached))))
    }
}
