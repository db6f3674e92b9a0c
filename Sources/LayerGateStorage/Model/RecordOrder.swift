/// The order every stream of records keeps — a put's batch, the WAL on
/// replay: LSNs never go down, and no (key, LSN) comes twice. One check for
/// both, so what a put could never store, a replay never accepts either.
struct RecordOrder {
    private(set) var lastLsn = Lsn.zero
    private var keysAtLastLsn: Set<PageKey> = []
    private var count = 0

    /// Takes the next record, or says what is wrong with it.
    mutating func accept(_ r: Record) -> String? {
        defer { count += 1 }
        if count > 0 {
            if r.lsn < lastLsn { return "records out of LSN order: \(r.lsn) after \(lastLsn)" }
            if r.lsn == lastLsn {
                guard keysAtLastLsn.insert(r.key).inserted else { return "record for \(r.key) at \(r.lsn) appears twice" }
                return nil
            }
        }
        lastLsn = r.lsn
        keysAtLastLsn.removeAll(keepingCapacity: true)
        keysAtLastLsn.insert(r.key)
        return nil
    }
}
