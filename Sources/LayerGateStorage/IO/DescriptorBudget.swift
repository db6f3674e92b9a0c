import Synchronization

/// The share of the process's descriptor table that open tenants may hold:
/// each holds its directory, its WAL directory and, while it ingests, its
/// newest WAL segment. The rest of the table is kept for connections, layer
/// files and the runtime; a process that runs out entirely fails in places
/// it cannot recover from (the thread pool's monitor, the event loop), so a
/// tenant that does not fit stays `loading` instead, and says why.
public final class DescriptorBudget: Sendable {
    public static let perTenant = 3
    public let capacity: Int
    private let used = Atomic<Int>(0)

    public init(capacity: Int) { self.capacity = max(Self.perTenant, capacity) }

    /// Takes one tenant's share, or false when the table is spoken for.
    func reserveTenant() -> Bool {
        var current = used.load(ordering: .relaxed)
        while current + Self.perTenant <= capacity {
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + Self.perTenant,
                                                             ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func releaseTenant() { used.subtract(Self.perTenant, ordering: .relaxed) }

    public var tenantsOpen: Int { used.load(ordering: .relaxed) / Self.perTenant }
}
