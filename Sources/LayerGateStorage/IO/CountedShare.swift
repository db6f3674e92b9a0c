import Synchronization

/// A count that never passes its capacity, taken and given back without a
/// lock: the descriptors a kind of user may hold at once.
final class CountedShare: Sendable {
    let capacity: Int
    private let used = Atomic<Int>(0)

    init(capacity: Int) { self.capacity = capacity }

    /// Takes `n`, or false (taking nothing) when that would pass the capacity.
    func take(_ n: Int = 1) -> Bool {
        var current = used.load(ordering: .relaxed)
        while current + n <= capacity {
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + n, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func give(_ n: Int = 1) { used.subtract(n, ordering: .relaxed) }

    var taken: Int { used.load(ordering: .relaxed) }
}
