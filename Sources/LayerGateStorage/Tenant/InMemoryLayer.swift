import Synchronization

/// Records that are durable in the WAL but not yet in a layer file.
///
/// The open layer takes inserts; once frozen (at the checkpoint distance) it
/// is immutable until its L0 delta layer is published and listed.
final class InMemoryLayer: Sendable {
    /// First LSN this layer may hold (the previous layer's end + 1).
    let startLsn: Lsn

    private struct State {
        var versions: [PageKey: [(lsn: Lsn, value: RecordValue)]] = [:]
        var endLsn: Lsn
        var bytes = 0
        var count = 0
    }

    private let state: Mutex<State>

    init(startLsn: Lsn) {
        self.startLsn = startLsn
        state = Mutex(State(endLsn: startLsn.previous))
    }

    /// Records are validated and in LSN order, all above the current end.
    func insert(_ records: [Record]) {
        state.withLock { s in
            for r in records {
                s.versions[r.key, default: []].append((r.lsn, r.value))
                s.bytes += Self.countedBytes(r)
                s.count += 1
                s.endLsn = r.lsn
            }
        }
    }

    /// Runs `body` on the versions of one key (oldest first; nil: none) under
    /// the layer's lock, so a read copies an image out of them without taking
    /// its own reference to the list (a retain and a release per cached
    /// GetPage). `body` only copies memory: inserts wait for it.
    func withVersions<R>(of key: PageKey, _ body: ([(lsn: Lsn, value: RecordValue)]?) -> R) -> R {
        state.withLock { body($0.versions[key]) }
    }

    /// What a record counts toward the checkpoint distance and the disk
    /// budget: its value's encoded size, and 32 for its key, LSN and keeping.
    static func countedBytes(_ r: Record) -> Int { ValueCodec.encodedSize(r.value) + 32 }

    var endLsn: Lsn { state.withLock { $0.endLsn } }
    var approximateBytes: Int { state.withLock { $0.bytes } }
    var isEmpty: Bool { state.withLock { $0.count == 0 } }
    var recordCount: Int { state.withLock { $0.count } }

    /// Every record sorted by (key, lsn), for writing the L0 layer. Call on a frozen layer.
    func sortedRecords() -> [(key: PageKey, versions: [(lsn: Lsn, value: RecordValue)])] {
        let all = state.withLock { $0.versions }
        return all.keys.sorted().map { ($0, all[$0]!) }
    }
}
