import LayerGateWire
import Synchronization

/// What a batch's answers are gathered into, by the connection's loop.
protocol GatheredAnswers: Sendable {
    /// Sets request `index`'s outcome; false when it was set already.
    mutating func set(_ index: Int, _ answer: Result<Answer, ClientError>) -> Bool
    /// What the callers get once every answer is set; the waiters resumed
    /// then all get the same (`PageReads` moves its pages out: it has one caller).
    mutating func handOver() -> Self
    /// Its slot, as the connection's loop holds it.
    static func sink(_ slot: ResponseSlot<Self>) -> AnswerSink
}

extension GatheredAnswers {
    mutating func handOver() -> Self { self }
}

/// Where a connection's loop hands each answer, or the error that ended the
/// connection: one case per kind of slot, so that each is called as the
/// concrete type it is (through a protocol, the generic slot's code ran
/// unspecialized and looked up its type metadata on every answer).
enum AnswerSink: Sendable {
    case bodies(ResponseSlot<Outcomes>)
    case pages(ResponseSlot<PageReads>)
    /// Its caller was cancelled: the answer is read and dropped.
    case abandoned

    func complete(_ index: Int, _ answer: Result<Answer, ClientError>) {
        switch self {
        case .bodies(let slot): slot.complete(index, answer)
        case .pages(let slot): slot.complete(index, answer)
        case .abandoned: break
        }
    }

    /// Every one of `count` requests failed with `error` before it was sent.
    func fail(_ count: Int, _ error: ClientError) {
        for i in 0..<count { complete(i, .failure(error)) }
    }
}

/// The answers to one call or one batch: each request's outcome is set exactly
/// once, whoever gets there first (its response, the connection ending), and
/// the caller wakes once, when all are set.
final class ResponseSlot<Gathered: GatheredAnswers>: Sendable {
    private struct State {
        var gathered: Gathered
        var left: Int
        var waiter: UnsafeContinuation<Gathered, Never>?
        /// Tasks that wait for the same answers too (a `Pending` awaited by two tasks), seldom any.
        var moreWaiters: [UnsafeContinuation<Gathered, Never>] = []
    }

    private let state: Mutex<State>
    /// The requests, on their connection: ids `first ..< first + count`. Nil when none was sent.
    private let sent: (socket: ClientSocket, loop: ClientLoop, first: UInt64, count: Int)?

    /// Requests `first ..< first + count` on `socket`, their answers gathered into `gathered`.
    init(count: Int, into gathered: consuming Gathered, sentOn socket: ClientSocket, loop: ClientLoop, first: UInt64) {
        state = Mutex(State(gathered: gathered, left: count))
        sent = (socket, loop, first, count)
    }

    /// Every one of `count` requests failed with `error` before it was sent
    /// (nothing for a cancellation to abandon).
    init(count: Int, into gathered: consuming Gathered, failing error: ClientError) {
        state = Mutex(State(gathered: gathered, left: count))
        sent = nil
        Gathered.sink(self).fail(count, error)
    }

    func complete(_ index: Int, _ answer: Result<Answer, ClientError>) {
        let (done, waiter, more) = state.withLock { s -> (Gathered?, UnsafeContinuation<Gathered, Never>?, [UnsafeContinuation<Gathered, Never>]) in
            guard s.gathered.set(index, answer) else { return (nil, nil, []) }
            s.left -= 1
            guard s.left == 0, let w = s.waiter else { return (nil, nil, []) }
            s.waiter = nil
            defer { s.moreWaiters = [] }
            return (s.gathered.handOver(), w, s.moreWaiters)
        }
        guard let waiter, let done else { return }
        waiter.resume(returning: done)
        for w in more { w.resume(returning: done) }
    }

    /// Waits for every answer. A continuation resumes its task on the generic
    /// executor before the task hops back to its actor: a woken thread of the
    /// global pool, unless the task prefers an executor. So a caller running
    /// on `loop` (an actor on the connection's executor, or a task preferring
    /// it) waits with `loop` as its preference and is resumed where the answer
    /// was read. Any other caller must not: an actor of its own (a default
    /// one) would then go on running on the loop, and hold up its connections.
    ///
    /// A waiter whose task is cancelled abandons the requests: each one not
    /// answered yet fails with `cancelled` (for every waiter), and its answer
    /// is dropped when it comes. The connection goes on.
    nonisolated(nonsending)
    func answers(resumingOn loop: ClientLoop) async -> Gathered {
        if let done = state.withLock({ $0.left == 0 ? $0.gathered.handOver() : nil }) { return done }
        guard loop.isCurrent else { return await waitCancellably() }
        // Inside the preference: the handler's closure would hop to the generic executor, the
        // loop only with the preference set (outside it, two jobs a call went to Swift's pool).
        return await withTaskExecutorPreference(loop) { await waitCancellably() }
    }

    nonisolated(nonsending)
    private func waitCancellably() async -> Gathered {
        await withTaskCancellationHandler {
            await wait()
        } onCancel: {
            guard let sent else { return }
            sent.loop.executeIfRunning { sent.socket.abandon(first: sent.first, count: sent.count) }
        }
    }

    nonisolated(nonsending)
    private func wait() async -> Gathered {
        await withUnsafeContinuation { continuation in
            let done = state.withLock { s -> Gathered? in
                if s.left == 0 { return s.gathered.handOver() }
                if s.waiter == nil { s.waiter = continuation } else { s.moreWaiters.append(continuation) }
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }
}

/// Each request's answer body, for `call` and `callMany`.
struct Outcomes: GatheredAnswers {
    private var outcomes: [Result<Wire.Response.Body, ClientError>?]

    init(count: Int) { outcomes = Array(repeating: nil, count: count) }

    mutating func set(_ index: Int, _ answer: Result<Answer, ClientError>) -> Bool {
        guard case nil = outcomes[index] else { return false }
        outcomes[index] = answer.flatMap { $0.outcome() }
        return true
    }

    var all: [Result<Wire.Response.Body, ClientError>] { outcomes.compactMap { $0 } }

    static func sink(_ slot: ResponseSlot<Outcomes>) -> AnswerSink { .bodies(slot) }
}

/// Pages copied into the caller's memory as they come, for `getPages(…, into:)`.
struct PageReads: GatheredAnswers {
    /// The caller's memory, moved here for the call and back after: held by
    /// one owner at a time, so a page is written into it, never a copy of it.
    private(set) var pages: [UInt8]
    private var lsns: [Result<UInt64, ClientError>?]

    init(count: Int, into pages: [UInt8]) {
        self.pages = pages
        lsns = Array(repeating: nil, count: count)
    }

    mutating func set(_ index: Int, _ answer: Result<Answer, ClientError>) -> Bool {
        guard case nil = lsns[index] else { return false }
        lsns[index] = answer.flatMap { $0.copyPage(into: &pages, at: index * Wire.pageBytes) }
        return true
    }

    var outcomes: [Result<UInt64, ClientError>] { lsns.compactMap { $0 } }

    static func sink(_ slot: ResponseSlot<PageReads>) -> AnswerSink { .pages(slot) }

    mutating func handOver() -> PageReads {
        defer { pages = [] }
        return self
    }
}
