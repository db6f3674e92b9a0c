import Synchronization

/// The bytes of large requests being received, decoded or served, across all
/// connections (`ServerLimits.maxInflightBytes`). A connection reserves a
/// large frame's size before it reads the frame's body; when the budget is
/// spent it stops reading and is woken, in turn, as others give bytes back.
///
/// Two pools: the writers' (connections that showed a token that may write,
/// or the server's uid without tokens) and a small one for everyone else, so
/// a peer that cannot write never holds back the ingest of one that can.
struct InflightBudgets: Sendable {
    let writers: InflightBudget
    let others: InflightBudget

    init(capacity: Int) {
        writers = InflightBudget(capacity: capacity)
        others = InflightBudget(capacity: capacity / 8)
    }
}

/// Bytes held from one pool until the request they were for is answered.
struct Reservation: Sendable {
    let bytes: Int
    let pool: InflightBudget

    func release() { pool.release(bytes) }
}

final class InflightBudget: Sendable {
    let capacity: Int

    private struct State {
        var used = 0
        var waiting: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var used: Int { state.withLock { $0.used } }

    /// Reserves `bytes`, or returns false and calls `wake` once bytes are
    /// given back (the caller then tries again). One request is always let in
    /// when nothing is reserved, so a frame larger than the budget can pass.
    func reserve(_ bytes: Int, orWake wake: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { s in
            if s.used == 0 || s.used + bytes <= capacity {
                s.used += bytes
                return true
            }
            s.waiting.append(wake)
            return false
        }
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        let woken = state.withLock { s -> [@Sendable () -> Void] in
            s.used -= bytes
            defer { s.waiting = [] }
            return s.waiting
        }
        for wake in woken { wake() }
    }
}
