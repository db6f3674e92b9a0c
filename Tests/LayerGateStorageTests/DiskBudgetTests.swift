import Foundation
import Testing

@testable import LayerGateStorage

/// The room ingest keeps for a flush (`DiskBudget.flushSize`) holds what the
/// flush really writes, for the record mixes that cost the most on disk over
/// what memory counts: the smallest deltas (the index entry outweighs them),
/// and images that each follow a delta ending just where the most padding
/// starts them at a block boundary. A flush that outgrew its room could fail
/// on a full disk with nothing left to free.
@Suite("Disk budget: the room kept for a flush")
struct DiskBudgetTests {
    @Test(arguments: ["smallest deltas", "one-byte patches", "padded images", "images", "mixed"])
    func aFlushFitsTheRoomKeptForIt(mix: String) throws {
        let records = Self.records(mix)
        let memory = InMemoryLayer(startLsn: Lsn(1))
        memory.insert(records)
        let dir = TempDir()
        let written = try writeLayer(dir.path, records)
        let room = DiskBudget.flushSize(memory.approximateBytes)
        #expect(written.size <= room, "\(mix): \(records.count) records counted \(memory.approximateBytes) bytes wrote \(written.size), over the \(room) kept")
    }

    /// Records in LSN order, one LSN each.
    private static func records(_ mix: String) -> [Record] {
        var out: [Record] = []
        var lsn: UInt64 = 1
        func add(_ make: (UInt64) -> Record) {
            out.append(make(lsn))
            lsn += 1
        }
        switch mix {
        case "smallest deltas":
            // A will_init delta without patches: 4 bytes encoded.
            for b in 0..<40_000 as Range<UInt32> {
                add { Record(key: key(b), lsn: Lsn($0), value: .delta(Delta(willInit: true, patches: []))) }
            }
        case "one-byte patches":
            for b in 0..<40_000 as Range<UInt32> { add { delta(key(b), $0, offset: Int(b % 8192), bytes: [7]) } }
        case "padded images":
            // Per key: a delta of 6,144 encoded bytes from a block boundary (so the
            // image after it starts 2,048 bytes before the next), then that image,
            // padded to it, ending on a boundary again.
            for b in 0..<1_000 as Range<UInt32> {
                add { delta(key(b), $0, offset: 0, bytes: [UInt8](repeating: 3, count: 6144 - 8)) }
                add { image(key(b), $0) }
            }
        case "images":
            for b in 0..<1_500 as Range<UInt32> { add { image(key(b), $0) } }
        default:
            for b in 0..<3_000 as Range<UInt32> {
                switch b % 4 {
                case 0: add { image(key(b), $0) }
                case 1: add { delta(key(b), $0, offset: Int(b % 4000), bytes: [UInt8](repeating: 1, count: Int(b % 900) + 1)) }
                case 2: add { Record(key: key(b), lsn: Lsn($0), value: .delta(Delta(willInit: true, patches: []))) }
                default:
                    add { delta(key(b), $0, offset: 0, bytes: [UInt8](repeating: 2, count: Int(b % 7000) + 1)) }
                    add { image(key(b), $0) }
                }
            }
        }
        return out
    }
}
