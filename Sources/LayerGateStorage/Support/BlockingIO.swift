import Dispatch

/// Runs blocking file work (fsync, layer writes, loads) off the Swift
/// concurrency pool, so a slow disk never starves the threads that serve
/// cache hits.
enum BlockingIO {
    private static let queue = DispatchQueue(label: "layergate.blocking-io", attributes: .concurrent)

    /// Starts `body` on an I/O thread without waiting for it.
    static func spawn(_ body: @escaping @Sendable () -> Void) { queue.async(execute: body) }

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws(StorageError) -> T) async throws(StorageError) -> T {
        let result: Result<T, StorageError> = await withCheckedContinuation { c in
            queue.async {
                do throws(StorageError) { c.resume(returning: .success(try body())) } catch { c.resume(returning: .failure(error)) }
            }
        }
        return try result.get()
    }
}
