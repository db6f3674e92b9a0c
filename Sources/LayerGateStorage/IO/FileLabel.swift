/// How a file is named in messages: by tenant and role, never by where the
/// data directory is ("tenant 0123…, layer 00…-g00000002", "tenant 0123…,
/// WAL segment 0000000000000001.wal").
/// A name the engine writes before it publishes it (`.___temp`) is told by
/// what it will be: "tenant 0123… (being created), index.json (being written)".
enum FileLabel {
    static func describe(_ path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if let t = parts.firstIndex(of: "tenants"), t + 1 < parts.count {
            let (tenantName, tenantTemp) = withoutTemp(parts[t + 1])
            let tenant = tenantName + (tenantTemp ? " (being created)" : "")
            let rest = parts[(t + 2)...]
            guard let last = rest.last else { return "tenant \(tenant)" }
            let (name, temp) = withoutTemp(last)
            let written = temp ? " (being written)" : ""
            if rest.count == 2, rest.first == "wal" { return "tenant \(tenant), WAL segment \(name)\(written)" }
            if rest.count == 1, name == "index.json" { return "tenant \(tenant), index.json\(written)" }
            if rest.count == 1, LayerName(parsing: name) != nil { return "tenant \(tenant), layer \(name)\(written)" }
            if rest.count == 1, temp, name.hasPrefix("layer-") { return "tenant \(tenant), a new layer (being written)" }
            return "tenant \(tenant), file \((rest.dropLast().map(String.init) + [name]).joined(separator: "/"))\(written)"
        }
        // Outside a tenant: the last component only, so no absolute path leaks.
        return path.hasPrefix("/") ? String(parts.last ?? "/") : path
    }

    private static func withoutTemp(_ name: Substring) -> (String, Bool) {
        let suffix = ".___temp"
        return name.hasSuffix(suffix) ? (String(name.dropLast(suffix.count)), true) : (String(name), false)
    }
}
