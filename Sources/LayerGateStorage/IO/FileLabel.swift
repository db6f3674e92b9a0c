/// How a file is named in messages: by tenant and role, never by where the
/// data directory is ("tenant 0123…, layer 00…-g00000002", "tenant 0123…,
/// WAL segment 0000000000000001.wal").
enum FileLabel {
    static func describe(_ path: String) -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if let t = parts.firstIndex(of: "tenants"), t + 1 < parts.count {
            let tenant = parts[t + 1]
            let rest = parts[(t + 2)...]
            guard let name = rest.last else { return "tenant \(tenant)" }
            if rest.count == 2, rest.first == "wal" { return "tenant \(tenant), WAL segment \(name)" }
            if rest.count == 1, name == "index.json" { return "tenant \(tenant), index.json" }
            if rest.count == 1, LayerName(parsing: String(name)) != nil { return "tenant \(tenant), layer \(name)" }
            return "tenant \(tenant), file \(rest.joined(separator: "/"))"
        }
        // Outside a tenant: the last component only, so no absolute path leaks.
        return path.hasPrefix("/") ? String(parts.last ?? "/") : path
    }
}
