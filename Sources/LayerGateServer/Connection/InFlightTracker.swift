import Synchronization

/// Counts requests in flight across all connections, for graceful shutdown.
final class InFlightTracker: Sendable {
    private let count = Atomic<Int>(0)
    private let idle = Mutex<(next: Int, waiters: [Int: CheckedContinuation<Void, Never>])>((0, [:]))

    func started() { count.add(1, ordering: .relaxed) }

    func finished() {
        guard count.subtract(1, ordering: .relaxed).newValue == 0 else { return }
        let waiters = idle.withLock { w -> [CheckedContinuation<Void, Never>] in
            defer { w.waiters = [:] }
            return Array(w.waiters.values)
        }
        for c in waiters { c.resume() }
    }

    var current: Int { count.load(ordering: .relaxed) }

    /// Returns when nothing is in flight (or at once), or when the task is
    /// cancelled: shutdown's grace period ends the wait, whatever still runs.
    func drained() async {
        let id = idle.withLock { w -> Int in
            defer { w.next += 1 }
            return w.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = idle.withLock { w -> Bool in
                    if count.load(ordering: .relaxed) == 0 || Task.isCancelled { return true }
                    w.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            idle.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}

