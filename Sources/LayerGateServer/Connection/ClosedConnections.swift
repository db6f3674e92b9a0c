import CSystemShims
import Synchronization

/// Gives the heap's free pages back once many connections have closed, on
/// either loop. Why: a closed connection's buffers sit in the allocator's
/// free lists between live blocks, still counted in RSS: after 2 × 1,000
/// peers that read none of their answers had closed, the nio loop, which did
/// not trim, kept 183 MiB, and the epoll loop, which did, went back to 36.
enum ClosedConnections {
    private static let sinceTrim = Atomic<Int>(0)
    /// Past this many closes since the last trim, the next `trimIfMany` trims.
    static let perTrim = 256

    static func noteClosed() { sinceTrim.add(1, ordering: .relaxed) }

    /// Called once a second by each loop.
    static func trimIfMany() {
        // Read and reset in one step: two loops never both trim for the same closes.
        guard sinceTrim.load(ordering: .relaxed) >= perTrim, sinceTrim.exchange(0, ordering: .relaxed) >= perTrim else { return }
        lg_release_free_heap()
    }
}
