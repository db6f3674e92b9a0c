import Synchronization

/// A counter that only grows, and tasks waiting for it to reach a value
/// (Neon's SeqWait). The one wait primitive of a tenant: readers wait here for
/// last_record_lsn, puts held back by a slow flush wait here for flush progress.
///
/// A wait ends when the value is reached, when its timeout runs out, when its
/// task is cancelled (a client that went away), or when `failAll` ends every
/// wait at once with an error (reset, shutdown). Nothing polls.
final class SeqWait: Sendable {
    enum Outcome: Equatable, Sendable {
        case reached
        case timedOut(current: UInt64)
        case failed(StorageError)
    }

    private struct Waiter {
        var target: UInt64
        var continuation: CheckedContinuation<Outcome, Never>
        var timer: Task<Void, Never>?
    }

    private struct State {
        var value: UInt64
        var waiters: [UInt64: Waiter] = [:]
        var nextId: UInt64 = 0
        /// Waits cancelled before they were registered.
        var cancelledEarly: Set<UInt64> = []
    }

    private let state: Mutex<State>
    /// Waits at once at most; one more fails with `overflow`.
    private let maxWaiters: Int
    private let overflow: StorageError

    init(_ value: UInt64 = 0, maxWaiters: Int = .max, overflow: StorageError = .resourceExhausted("too many waiting")) {
        state = Mutex(State(value: value))
        self.maxWaiters = maxWaiters
        self.overflow = overflow
    }

    var value: UInt64 { state.withLock { $0.value } }
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Raises the value (never lowers it) and wakes every wait it satisfies.
    func advance(to v: UInt64) {
        let woken = state.withLock { s -> [Waiter] in
            guard v > s.value else { return [] }
            s.value = v
            var out: [Waiter] = []
            for (id, w) in s.waiters where w.target <= v {
                out.append(w)
                s.waiters[id] = nil
            }
            return out
        }
        for w in woken {
            w.timer?.cancel()
            w.continuation.resume(returning: .reached)
        }
    }

    /// Sets the value outright (a reload may start from what the disk says).
    func reset(to v: UInt64) {
        state.withLock { $0.value = v }
        advance(to: v)
    }

    /// Ends every current wait with `error`. Later waits are not affected.
    func failAll(_ error: StorageError) {
        let all = state.withLock { s -> [Waiter] in
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in all {
            w.timer?.cancel()
            w.continuation.resume(returning: .failed(error))
        }
    }

    /// Waits until the value is at least `target`, for at most `timeout`.
    func wait(for target: UInt64, timeout: Duration) async -> Outcome {
        let id = state.withLock { s -> UInt64 in
            s.nextId += 1
            return s.nextId
        }
        defer { state.withLock { _ = $0.cancelledEarly.remove(id) } }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
                let now = state.withLock { s -> Outcome? in
                    if s.cancelledEarly.remove(id) != nil { return .failed(.cancelled("the waiting request went away")) }
                    if s.value >= target { return .reached }
                    if s.waiters.count >= maxWaiters { return .failed(overflow) }
                    s.waiters[id] = Waiter(target: target, continuation: c, timer: nil)
                    return nil
                }
                if let now {
                    c.resume(returning: now)
                    return
                }
                let timer = Task { [weak self] in
                    try? await Task.sleep(for: timeout)
                    self?.end(id, with: nil)
                }
                let stillWaiting = state.withLock { s -> Bool in
                    guard s.waiters[id] != nil else { return false }
                    s.waiters[id]?.timer = timer
                    return true
                }
                if !stillWaiting { timer.cancel() }
            }
        } onCancel: {
            end(id, with: .failed(.cancelled("the waiting request went away")))
        }
    }

    /// Ends one wait: with `outcome`, or as timed out when nil.
    private func end(_ id: UInt64, with outcome: Outcome?) {
        let ended = state.withLock { s -> (Waiter, UInt64)? in
            guard let w = s.waiters.removeValue(forKey: id) else {
                if outcome != nil { s.cancelledEarly.insert(id) }
                return nil
            }
            return (w, s.value)
        }
        guard let (w, value) = ended else { return }
        w.timer?.cancel()
        w.continuation.resume(returning: outcome ?? .timedOut(current: value))
    }
}
