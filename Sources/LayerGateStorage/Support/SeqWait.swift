import Synchronization

/// A counter that only grows, and tasks waiting for it to reach a value
/// (Neon's SeqWait). The one wait primitive of a tenant: readers wait here for
/// last_record_lsn, puts held back by a slow flush wait here for flush progress.
///
/// A wait ends when the value is reached, when its timeout runs out, when its
/// task is cancelled (a client that went away), or when `failAll` ends every
/// wait at once with an error (reset, shutdown). Nothing polls.
///
/// Timeouts share one timer task, which sleeps until the earliest deadline.
/// A sleep per wait would outlive a cancelled wait: the runtime keeps a
/// cancelled sleep's timer until its deadline, so peers that open and drop
/// 60 s waits would pile up memory for a minute each.
final class SeqWait: Sendable {
    enum Outcome: Equatable, Sendable {
        case reached
        case timedOut(current: UInt64)
        case failed(StorageError)
    }

    private struct Waiter {
        var target: UInt64
        var continuation: CheckedContinuation<Outcome, Never>
        var deadline: ContinuousClock.Instant
    }

    private struct State {
        var value: UInt64
        var waiters: [UInt64: Waiter] = [:]
        var nextId: UInt64 = 0
        /// Waits cancelled before they were registered.
        var cancelledEarly: Set<UInt64> = []
        /// The timer task and the deadline it sleeps until.
        var timer: Task<Void, Never>?
        var timerDeadline: ContinuousClock.Instant?
        /// Which timer is the current one; a replaced one stops at once.
        var timerGeneration: UInt64 = 0
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
        for w in woken { w.continuation.resume(returning: .reached) }
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
        for w in all { w.continuation.resume(returning: .failed(error)) }
    }

    /// Waits until the value is at least `target`, for at most `timeout`.
    func wait(for target: UInt64, timeout: Duration) async -> Outcome {
        let id = state.withLock { s -> UInt64 in
            s.nextId += 1
            return s.nextId
        }
        defer { state.withLock { _ = $0.cancelledEarly.remove(id) } }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
                let (now, replaced) = state.withLock { s -> (Outcome?, Task<Void, Never>?) in
                    if s.cancelledEarly.remove(id) != nil { return (.failed(.cancelled("the waiting request went away")), nil) }
                    if s.value >= target { return (.reached, nil) }
                    if s.waiters.count >= maxWaiters { return (.failed(overflow), nil) }
                    s.waiters[id] = Waiter(target: target, continuation: c, deadline: deadline)
                    // Waits with one timeout come in deadline order: the timer rarely restarts.
                    guard s.timerDeadline.map({ deadline < $0 }) ?? true else { return (nil, nil) }
                    let old = s.timer
                    s.timerDeadline = deadline
                    s.timerGeneration += 1
                    let generation = s.timerGeneration
                    s.timer = Task { [weak self] in await self?.runTimer(until: deadline, generation: generation) }
                    return (nil, old)
                }
                replaced?.cancel()
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            end(id, with: .failed(.cancelled("the waiting request went away")))
        }
    }

    /// Ends one wait with `outcome` (cancellation).
    private func end(_ id: UInt64, with outcome: Outcome) {
        let ended = state.withLock { s -> Waiter? in
            guard let w = s.waiters.removeValue(forKey: id) else {
                s.cancelledEarly.insert(id)
                return nil
            }
            return w
        }
        ended?.continuation.resume(returning: outcome)
    }

    /// The one timer: sleeps until `deadline`, times out every wait due by
    /// then, and goes on to the next deadline until no wait is left.
    private func runTimer(until first: ContinuousClock.Instant, generation: UInt64) async {
        var deadline = first
        while true {
            do { try await Task.sleep(until: deadline, clock: .continuous) } catch { return }  // replaced by an earlier deadline
            let now = ContinuousClock.now
            let (due, value, next) = state.withLock { s -> ([Waiter], UInt64, ContinuousClock.Instant?) in
                guard s.timerGeneration == generation else { return ([], 0, nil) }
                var due: [Waiter] = []
                var next: ContinuousClock.Instant?
                for (id, w) in s.waiters {
                    if w.deadline <= now {
                        due.append(w)
                        s.waiters[id] = nil
                    } else if next.map({ w.deadline < $0 }) ?? true {
                        next = w.deadline
                    }
                }
                s.timerDeadline = next
                if next == nil { s.timer = nil }
                return (due, s.value, next)
            }
            for w in due { w.continuation.resume(returning: .timedOut(current: value)) }
            guard let next else { return }
            deadline = next
        }
    }
}
