import Synchronization

/// A put's place in its connection's order. The PutRecords of one connection
/// are applied in the order they were sent: each waits for the one before it
/// to be *admitted* (its LSNs checked and reserved, its bytes queued for the
/// WAL), not to be durable, so pipelined puts share one group commit's fsync
/// instead of taking one each.
public final class PutTurn: Sendable {
    private struct State {
        var passed = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// The put was admitted, or never will be: the next may go. Idempotent.
    public func pass() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard !s.passed else { return [] }
            s.passed = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Returns once `pass` was called. Whoever holds the turn must pass it on
    /// every path, so this never waits longer than that put's admission.
    public func reached() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.passed { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
