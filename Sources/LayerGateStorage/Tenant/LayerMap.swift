/// The published layers of a tenant, newest first, as readers see them.
///
/// A value type: readers copy it (a reference count, no allocation) and the
/// layers they copied stay open until they finish, even if compaction or GC
/// removes them from the tenant meanwhile (or eviction removes their files).
struct LayerMap: Sendable {
    /// Sorted by lsnEnd descending; at equal end, image layers first (an image
    /// at L is complete at L, a delta ending at L is not needed below it).
    private(set) var layers: [TenantLayer] = []
    private var names: Set<String> = []

    var count: Int { layers.count }

    /// Adds a published layer. Invariant 3: a name is held at most once; a
    /// second insert means two files would claim the same data, so stop.
    mutating func insert(_ layer: TenantLayer) {
        let name = layer.descriptor.fileName
        guard names.insert(name).inserted else {
            preconditionFailure("layer map already holds \(name): refusing to serve from two files")
        }
        let i = layers.firstIndex { Self.ordered(layer, $0) } ?? layers.endIndex
        layers.insert(layer, at: i)
    }

    mutating func remove(named name: String) -> TenantLayer? {
        guard names.remove(name) != nil, let i = layers.firstIndex(where: { $0.descriptor.fileName == name }) else {
            return nil
        }
        return layers.remove(at: i)
    }

    func contains(_ name: String) -> Bool { names.contains(name) }

    private static func ordered(_ a: TenantLayer, _ b: TenantLayer) -> Bool {
        let x = a.descriptor.name, y = b.descriptor.name
        if x.lsnEnd != y.lsnEnd { return x.lsnEnd > y.lsnEnd }
        if x.kind != y.kind { return x.kind == .image }
        return x.lsnStart > y.lsnStart
    }
}
