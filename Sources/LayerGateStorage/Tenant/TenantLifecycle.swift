/// A tenant's lifecycle as a pure state machine: each event either moves it
/// to a new state, with the actions that go with the move, or is refused. The
/// tenant carries the actions out and performs the I/O (`Tenant.move`).
///
///     loading ──loaded──▶ active ──reset──▶ resetting ──loaded──▶ active
///        │                  │                   │
///        └──failed──▶ broken ◀──────failed──────┘      broken ──reset──▶ resetting
///     any ──stop──▶ stopped
///     resetting ──resetAbandoned(previous)──▶ previous   (the reload hit a full
///         disk or no descriptors: the tenant serves on as it was)
public enum TenantState: Equatable, Sendable {
    case loading
    case active
    case resetting
    case broken(reason: String)
    case stopped

    /// The wire name (`TenantStatus.state`).
    public var name: String {
        switch self {
        case .loading: return "loading"
        case .active: return "active"
        case .resetting: return "resetting"
        case .broken: return "broken"
        case .stopped: return "stopped"
        }
    }
}

enum TenantEvent: Equatable {
    case loaded
    case loadFailed(String)
    case resetRequested
    /// A reset's reload failed for want of space or descriptors.
    case resetAbandoned(restoring: TenantState)
    case stop
}

/// What a move of the lifecycle asks the tenant to do.
enum TenantAction: Equatable {
    /// A running compaction stops at its next value, and none commits until `allowCompaction`.
    case stopCompaction
    case allowCompaction
    /// Every read waiting for an LSN and every put held back for flush room fails now.
    case failWaiters
}

struct TenantTransition: Equatable {
    var from: TenantState
    var to: TenantState
    var actions: [TenantAction]
}

enum TenantLifecycle {
    /// The move on `event`, or nil when the event is not allowed now.
    static func transition(_ state: TenantState, on event: TenantEvent) -> TenantTransition? {
        guard let to = next(state, on: event) else { return nil }
        let actions: [TenantAction]
        switch event {
        case .stop, .resetRequested: actions = [.stopCompaction, .failWaiters]
        case .loaded, .resetAbandoned: actions = [.allowCompaction]
        case .loadFailed: actions = []
        }
        return TenantTransition(from: state, to: to, actions: actions)
    }

    /// The next state, or nil when the event is not allowed now.
    static func next(_ state: TenantState, on event: TenantEvent) -> TenantState? {
        switch (state, event) {
        case (.loading, .loaded), (.resetting, .loaded): return .active
        case (.loading, .loadFailed(let r)), (.resetting, .loadFailed(let r)): return .broken(reason: r)
        case (.active, .resetRequested), (.broken, .resetRequested): return .resetting
        case (.resetting, .resetAbandoned(let previous)): return previous
        case (.stopped, _): return nil
        case (_, .stop): return .stopped
        default: return nil
        }
    }

    /// Whether reads and writes are served in this state; else the error to answer with.
    static func admission(_ state: TenantState, tenant: TenantId) -> StorageError? {
        switch state {
        case .active: return nil
        case .loading, .resetting: return .tenantUnavailable(tenant, state: state.name)
        case .broken(let reason): return .tenantBroken(tenant, reason: reason)
        case .stopped: return .tenantUnavailable(tenant, state: "stopped")
        }
    }
}
