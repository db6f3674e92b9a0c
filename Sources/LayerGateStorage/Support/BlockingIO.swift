import Dispatch

/// Runs blocking file work (fsync, layer writes, loads) off the Swift
/// concurrency pool, so a slow disk never starves the threads that serve
/// cache hits.
///
/// Each call gets a serial queue of its own, which GCD runs on its
/// overcommitting pool: a thread at once whenever none is idle. A shared
/// concurrent queue runs on the pool sized to the cores instead, which on
/// Linux adds a thread for blocked ones about once a second: with 2, 4 or 8
/// blocks blocked (a remote call, a wait for an eviction), the next block
/// started after 0.95, 1.45 and 3.45 s on this 2-core VM, and a reset's
/// close, a WAL commit or a flush waited that long. A queue a call costs
/// about 3.5 µs; the next block then started within 0.4 ms.
enum BlockingIO {
    private static func queue() -> DispatchQueue { DispatchQueue(label: "layergate.blocking-io") }

    /// Starts `body` on an I/O thread without waiting for it.
    static func spawn(_ body: @escaping @Sendable () -> Void) { queue().async(execute: body) }

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws(StorageError) -> T) async throws(StorageError) -> T {
        let result: Result<T, StorageError> = await withCheckedContinuation { c in
            queue().async {
                do throws(StorageError) { c.resume(returning: .success(try body())) } catch { c.resume(returning: .failure(error)) }
            }
        }
        return try result.get()
    }
}
