import ArgumentParser
import LayerGateStorage
import LayerGateWire

/// The operator's way out of a damaged index.json: offline, with the server
/// stopped, a new index from the tenant's layer files (see `IndexRebuild`).
struct RebuildIndex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild-index",
        abstract: "Rebuild a tenant's index.json from its layer files (offline: stop layergated first).",
        discussion: """
            For a tenant that is broken because its index.json is damaged. Every layer file is validated; \
            damaged ones are renamed <name>.damaged, image sets that do not cover every key are left out, and \
            the old index is kept as index.json.damaged. The WAL is untouched: at the next start it replays \
            what the layers do not hold. Refuses to run while a server holds the data directory. \
            The other way out is to put back a copy of index.json from a backup (with the server stopped).             With --remote-storage, layers evicted to the store are not on this disk and are not seen here (a gap             they leave is refused); the better way out is then to move the tenant's directory aside and attach             the tenant from the store with a higher generation.
            """)

    @Option(help: "The server's data directory.") var dataDir = Defaults.dataDirectory
    @Argument(help: "The tenant id (32 hex digits).") var tenant: String
    @Flag(help: "Report what would be done; change nothing.") var dryRun = false

    func run() async throws {
        let id: TenantId
        do { id = try TenantId(parsing: tenant) } catch { throw ValidationError("\(error)") }
        let r: IndexRebuild.Report
        do { r = try IndexRebuild.run(dataDirectory: dataDir, tenant: id, dryRun: dryRun) } catch {
            throw CLIError("rebuild-index: \(error)")
        }
        print("tenant \(id): \(r.deltaLayers.count) delta and \(r.imageLayers.count) image layers kept")
        for (name, reason) in r.damaged { print("  damaged\(r.written ? ", renamed \(name).damaged" : ""): \(name): \(reason)") }
        for name in r.incompleteImages { print("  left out (an incomplete image set; swept at the next start): \(name)") }
        print("  disk_consistent_lsn \(r.diskConsistentLsn), gc_cutoff_lsn \(r.gcCutoffLsn), generation \(r.generation)")
        if let refusal = r.refusal { throw CLIError("rebuild-index: nothing written: \(refusal)") }
        if r.gcCutoffLsn > .zero {
            print("  history below LSN \(r.gcCutoffLsn) is not kept (GC had removed it, or a layer was damaged): reads there answer LSN_BELOW_GC_HORIZON")
        }
        print(r.written ? "  wrote index.json (the old one is index.json.damaged); start layergated to load the tenant"
                        : "  dry run: nothing written")
    }
}
