import LayerGateWire
import Synchronization

/// The answers to one call or one batch: each request's outcome is set exactly
/// once, whoever gets there first (its response, the connection ending), and
/// the caller wakes once, when all are set.
final class ResponseSlot: Sendable {
    typealias Outcome = Result<Wire.Response.Body, ClientError>

    private struct State {
        var answers: [Outcome?]
        var left: Int
        var waiter: UnsafeContinuation<[Outcome], Never>?
    }

    private let state: Mutex<State>

    init(count: Int) {
        state = Mutex(State(answers: Array(repeating: nil, count: count), left: count))
    }

    /// Every one of `count` requests failed with `error` before it was sent.
    init(count: Int, failing error: ClientError) {
        state = Mutex(State(answers: Array(repeating: .failure(error), count: count), left: 0))
    }

    func complete(_ index: Int, _ outcome: Outcome) {
        let (all, waiter) = state.withLock { s -> ([Outcome], UnsafeContinuation<[Outcome], Never>?) in
            guard case nil = s.answers[index] else { return ([], nil) }
            s.answers[index] = outcome
            s.left -= 1
            guard s.left == 0, let w = s.waiter else { return ([], nil) }
            s.waiter = nil
            return (s.answers.compactMap { $0 }, w)
        }
        waiter?.resume(returning: all)
    }

    /// Waits for every answer. A continuation resumes its task on the generic
    /// executor before the task hops back to its actor: a woken thread of the
    /// global pool, unless the task prefers an executor. So a caller running
    /// on `loop` (an actor on the connection's executor, or a task preferring
    /// it) waits with `loop` as its preference and is resumed where the answer
    /// was read. Any other caller must not: an actor of its own (a default
    /// one) would then go on running on the loop, and hold up its connections.
    nonisolated(nonsending)
    func answers(resumingOn loop: ClientLoop) async -> [Outcome] {
        if let done = state.withLock({ $0.left == 0 ? $0.answers.compactMap { $0 } : nil }) { return done }
        guard loop.isCurrent else { return await wait() }
        return await withTaskExecutorPreference(loop) { await wait() }
    }

    nonisolated(nonsending)
    private func wait() async -> [Outcome] {
        await withUnsafeContinuation { continuation in
            let done = state.withLock { s -> [Outcome]? in
                if s.left == 0 { return s.answers.compactMap { $0 } }
                s.waiter = continuation
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }
}
