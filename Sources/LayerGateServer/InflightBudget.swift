import NIOCore
import Synchronization

/// The bytes of large requests being received, decoded or served, across all
/// connections (`ServerLimits.maxInflightBytes`). A connection reserves a
/// large frame's size before it reads the frame's body; when the budget is
/// spent it stops reading, and the bytes are reserved for it, in the order
/// connections asked, as others give bytes back.
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
    /// What `reserve` did: the bytes are the caller's now, or it is queued.
    enum Admission: Equatable {
        case reserved
        /// Its `granted` runs once the bytes are reserved for it; `cancel(ticket)` leaves the queue.
        case queued(ticket: UInt64)
    }

    private struct Waiter {
        let ticket: UInt64
        let bytes: Int
        let granted: @Sendable () -> Void
    }

    private struct State {
        let capacity: Int
        var used = 0
        /// First come, first served: when every waiter retried at each release
        /// and the first to retry won, one writer among many could lose every
        /// race until its wait ran out.
        var queue = CircularBuffer<Waiter>()
        var nextTicket: UInt64 = 0

        /// Reserves for the waiters at the head of the queue while they fit.
        mutating func grant() -> [Waiter] {
            var granted: [Waiter] = []
            while let w = queue.first, fits(w.bytes) {
                used += w.bytes
                granted.append(queue.removeFirst())
            }
            return granted
        }

        /// One request is always let in when nothing is reserved, so a frame larger than the budget can pass.
        func fits(_ bytes: Int) -> Bool { used == 0 || used + bytes <= capacity }
    }

    private let state: Mutex<State>

    init(capacity: Int) { state = Mutex(State(capacity: max(1, capacity))) }

    var used: Int { state.withLock { $0.used } }

    /// Reserves `bytes` when they fit and nobody waits before the caller; else
    /// queues it, and `granted` runs (on the thread that gave bytes back) once
    /// they are reserved for it. The caller then owns them and must release
    /// them, also when it no longer wants them.
    func reserve(_ bytes: Int, granted: @escaping @Sendable () -> Void) -> Admission {
        state.withLock { s in
            if s.queue.isEmpty && s.fits(bytes) {
                s.used += bytes
                return .reserved
            }
            let ticket = s.nextTicket
            s.nextTicket += 1
            s.queue.append(Waiter(ticket: ticket, bytes: bytes, granted: granted))
            return .queued(ticket: ticket)
        }
    }

    /// Leaves the queue. A ticket already granted is not in it: its `granted`
    /// has run or is on its way, and the caller releases those bytes.
    func cancel(_ ticket: UInt64) {
        let granted = state.withLock { s -> [Waiter] in
            guard let i = s.queue.firstIndex(where: { $0.ticket == ticket }) else { return [] }
            s.queue.remove(at: i)
            return s.grant()  // it may have been what the ones behind it waited for
        }
        for w in granted { w.granted() }
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        let granted = state.withLock { s -> [Waiter] in
            s.used -= bytes
            return s.grant()
        }
        for w in granted { w.granted() }
    }
}
