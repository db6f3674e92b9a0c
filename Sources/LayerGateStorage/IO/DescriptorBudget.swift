/// The share of the process's descriptor table that open tenants may hold:
/// each holds its directory, its WAL directory and, while it ingests, its
/// newest WAL segment. The rest of the table is kept for connections, layer
/// files and the runtime; a process that runs out entirely fails in places
/// it cannot recover from (the thread pool's monitor, the event loop), so a
/// tenant that does not fit stays `loading` instead, and says why.
public final class DescriptorBudget: Sendable {
    public static let perTenant = 3
    public var capacity: Int { share.capacity }
    private let share: CountedShare

    public init(capacity: Int) { share = CountedShare(capacity: max(Self.perTenant, capacity)) }

    /// Takes one tenant's share, or false when the table is spoken for.
    func reserveTenant() -> Bool { share.take(Self.perTenant) }

    func releaseTenant() { share.give(Self.perTenant) }

    public var tenantsOpen: Int { share.taken / Self.perTenant }
}
