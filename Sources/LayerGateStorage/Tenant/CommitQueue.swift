/// A tenant's group-commit queue, as pure state kept under the tenant's lock:
/// puts wait here in LSN order for the commit leader, which writes everything
/// queued as one WAL commit with one fsync, and also deletes WAL segments a
/// flush no longer needs (it is the WAL's only writer). The tenant runs the
/// leader and does the I/O (`Tenant.commitLoop`).
struct CommitQueue<Put> {
    /// The last LSN accepted: the next put must start above it.
    private(set) var reservedLsn = Lsn.zero
    private var queued: [Put] = []
    /// A leader runs on an I/O thread until it finds nothing to do.
    private var leaderRuns = false
    /// Rises each time the leader goes idle, for `Tenant.drainCommits`.
    private var idleEpoch: UInt64 = 0
    /// WAL segments wholly below this LSN are to be deleted.
    private var retireBelow: Lsn?

    enum Admission {
        case refused(StorageError)
        /// Queued; start a leader when `startLeader` (none runs).
        case queued(startLeader: Bool)
    }

    /// Queues `put`, whose records span `first…last`, if it starts above every LSN accepted before.
    mutating func admit(_ put: Put, first: Lsn, last: Lsn, tenant: TenantId) -> Admission {
        guard first > reservedLsn else {
            return .refused(.invalidArgument("tenant \(tenant): LSN \(first) is not above the last record LSN \(reservedLsn)"))
        }
        reservedLsn = last
        queued.append(put)
        return .queued(startLeader: startLeader())
    }

    /// Asks the leader to delete the WAL below `lsn`; true: start a leader.
    mutating func requestRetire(below lsn: Lsn) -> Bool {
        retireBelow = max(retireBelow ?? .zero, lsn)
        return startLeader()
    }

    private mutating func startLeader() -> Bool {
        if leaderRuns { return false }
        leaderRuns = true
        return true
    }

    enum Work {
        case retire(below: Lsn)
        case commit([Put])
        /// Nothing left: the leader stops, and the idle epoch is now `epoch`.
        case idle(epoch: UInt64)
    }

    /// The leader's next step: a requested WAL deletion first, then every queued put.
    mutating func next() -> Work {
        if let lsn = retireBelow {
            retireBelow = nil
            return .retire(below: lsn)
        }
        guard queued.isEmpty else {
            defer { queued = [] }
            return .commit(queued)
        }
        leaderRuns = false
        idleEpoch += 1
        return .idle(epoch: idleEpoch)
    }

    /// The epoch whose end means "the leader went idle", or nil when none runs.
    var runningEpoch: UInt64? { leaderRuns ? idleEpoch : nil }

    /// A commit failed: the queued puts are handed back to fail too (each was
    /// accepted above LSNs that are not stored), and the next put is checked
    /// against what is really durable.
    mutating func failQueued(lastDurable: Lsn) -> [Put] {
        defer { queued = [] }
        reservedLsn = lastDurable
        return queued
    }

    /// After a (re)load: nothing queued, and puts continue above `lastRecordLsn`.
    mutating func restart(at lastRecordLsn: Lsn) {
        queued = []
        reservedLsn = lastRecordLsn
    }
}
