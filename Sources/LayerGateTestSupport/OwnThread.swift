import Foundation

/// Runs `body` on a thread of its own and awaits it: for a test's call that
/// blocks (a client's blocking call, a failpoint's pause, a lock's wait, a
/// child's exit). Swift's pool has a thread per core, and on Linux
/// `DispatchQueue.global()` is that pool: one blocked call there holds up
/// every other test's tasks, and their timed expectations fail.
public func onThread<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
    try await onThreadResult(body).get()
}

/// The same, with the error as a value.
public func onThreadResult<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async -> Result<T, E> {
    await withCheckedContinuation { done in
        Thread { done.resume(returning: Result { () throws(E) in try body() }) }.start()
    }
}
