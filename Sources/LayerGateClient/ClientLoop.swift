import CSystemShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The thread that serves async clients' connections (`LayerGateClient`): one
/// epoll set over their sockets, and the executor of the code that drives
/// them. A caller running here (an actor on `LayerGateClient.executor`, a task
/// preferring `taskExecutor`) writes its request into the socket's buffer
/// itself, and is resumed here when the answer is read: a call wakes no
/// other thread. Requests written during one pass go out with one `send` per
/// socket when the pass's work is done.
///
/// Why not SwiftNIO, which the client used before: per call its channel
/// pipeline, promises and futures cost about three times the rest of the
/// client's work, and the async client made 0.43-0.78× the GetPages a second
/// of the C client (docs/ARCHITECTURE.md, "The clients").
///
/// State is confined to the loop's thread, except `inbox` (any thread, under
/// its lock, as are the opening and closing of `epollFd` and `wakeFd`) and
/// `thread`.
public final class ClientLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    /// The loop every connection uses unless given another: one thread for
    /// all, started by the first connection.
    public static let shared = ClientLoop()

    private enum Work: Sendable {
        case job(UnownedJob)
        case body(@Sendable () -> Void)
        /// Work on a connection (`executeIfRunning`): when the loop has stopped, `dropped` runs instead.
        case connectionWork(@Sendable () -> Void, dropped: @Sendable () -> Void)
    }

    private enum Phase { case idle, running, stopping, stopped }

    /// What other threads hand the loop. Its eventfd is written when `work`
    /// goes from empty to not empty, the rule of the server's `LoopQueue` (a
    /// module the client cannot import), so a burst costs one wake-up; unlike
    /// that queue, this one stops and starts again with the loop's thread.
    private struct Inbox {
        var phase = Phase.idle
        var work: [Work] = []
        var whenStopped: [CheckedContinuation<Void, Never>] = []
    }

    private let inbox = Mutex(Inbox())
    /// The loop thread's `pthread_t`, 0 when none runs.
    private let thread = Atomic<UInt>(0)
    private var epollFd: Int32 = -1
    private var wakeFd: Int32 = -1
    // Loop-confined from here.
    private var ready: [Work] = []
    private var running: [Work] = []
    private var sockets: [UInt64: ClientSocket] = [:]
    private var nextSocketId: UInt64 = 1
    private var unflushed: [ClientSocket] = []
    /// How often the sockets' timeouts are checked (nil: none has one), and when next.
    private var tickPeriod: Duration?
    private var nextTick = ContinuousClock.now

    private static let wakeId = UInt64.max

    public init() {}

    /// Whether the loop has a thread now (for tests: `isCurrent` says whose).
    var hasThread: Bool { thread.load(ordering: .acquiring) != 0 }

    /// True on the loop's own thread.
    public var isCurrent: Bool {
        let t = thread.load(ordering: .relaxed)
        return t != 0 && pthread_equal(pthread_self(), pthread_t(t)) != 0
    }

    // MARK: Executor

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if isCurrent { ready.append(.job(job)) } else { hand(.job(job)) }
    }

    public func checkIsolated() {
        if !isCurrent { preconditionFailure("code isolated to a ClientLoop ran on another thread") }
    }

    /// Runs `body` on the loop, after what is queued there.
    func execute(_ body: @escaping @Sendable () -> Void) {
        if isCurrent { ready.append(.body(body)) } else { hand(.body(body)) }
    }

    /// Runs `body` on the loop if its thread runs, and otherwise `dropped`,
    /// wherever the loop's stop finds it: for work on a connection of this
    /// loop that may come after its owner shut it down (a client closed or
    /// let go of, a cancelled call), which must not start it again. A loop
    /// that stopped ended its connections then: `body` has nothing left to do.
    func executeIfRunning(_ body: @escaping @Sendable () -> Void, dropped: @escaping @Sendable () -> Void = {}) {
        if isCurrent {
            ready.append(.body(body))
        } else if !append(.connectionWork(body, dropped: dropped)) {
            dropped()
        }
    }

    /// Runs `body` on the loop and returns what it returns.
    func perform<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in execute { c.resume(returning: body()) } }
    }

    private func hand(_ work: Work) {
        if append(work) { return }
        // Not started yet (an actor may take the shared loop as its executor before any
        // connection), or shut down since: start it. On Swift's pool an actor's jobs could run at once.
        if (try? start()) != nil, append(work) { return }
        runElsewhere(work)
    }

    /// Queues `work` for the loop; false when it is not running.
    private func append(_ work: Work) -> Bool {
        inbox.withLock { s -> Bool in
            guard s.phase == .running || s.phase == .stopping else { return false }
            s.work.append(work)
            if s.work.count == 1 { wake() }
            return true
        }
    }

    /// Wakes the loop. Under the inbox's lock: `stop` closes the eventfd under it.
    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFd, &one, MemoryLayout<UInt64>.size)
    }

    /// Work for a loop that could not start (the system gave no descriptor or
    /// thread): a job goes to Swift's global executor, so that no task waits
    /// for ever; a body runs here, one at a time (it finds no socket registered).
    private func runElsewhere(_ work: Work) {
        switch work {
        case .job(let job): globalConcurrentExecutor.enqueue(ExecutorJob(job))
        case .body(let body): Self.outsideTheLoop.withLock { _ in body() }
        case .connectionWork(_, let dropped): dropped()
        }
    }

    private static let outsideTheLoop = Mutex(())

    // MARK: Starting and stopping

    /// Starts the thread, unless it runs (or is stopping: work handed to it
    /// then is handed on to the next thread); fails when the system has no
    /// descriptor or thread to give.
    func start() throws(ClientError) {
        let failure: ClientError? = inbox.withLock { s in
            switch s.phase {
            case .running, .stopping: return nil
            case .idle, .stopped: break
            }
            let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
            guard ep >= 0 else { return .transport("epoll_create1 for the client's loop: \(String(cString: strerror(errno)))") }
            let wake = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
            var e = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: Self.wakeId))
            guard wake >= 0, epoll_ctl(ep, EPOLL_CTL_ADD, wake, &e) == 0 else {
                let why = String(cString: strerror(errno))
                Glibc.close(ep)
                if wake >= 0 { Glibc.close(wake) }
                return .transport("eventfd for the client's loop: \(why)")
            }
            (epollFd, wakeFd) = (ep, wake)
            var t = pthread_t()
            let me = Unmanaged.passRetained(self)
            guard pthread_create(&t, nil, { arg in
                guard let arg else { return nil }
                Unmanaged<ClientLoop>.fromOpaque(arg).takeRetainedValue().run()
                return nil
            }, me.toOpaque()) == 0 else {
                me.release()
                Glibc.close(ep)
                Glibc.close(wake)
                return .transport("no thread for the client's loop")
            }
            pthread_detach(t)
            s.phase = .running
            return nil
        }
        if let failure { throw failure }
    }

    /// Closes every connection of the loop (their waiting calls fail with
    /// `connectionClosed`) and ends its thread; returns once it has. Later
    /// calls on its connections fail at once. A loop of your own runs until
    /// this is called: its thread holds it, with its epoll set and eventfd.
    /// Work that comes after (a new connection, a job of an actor on it)
    /// starts a new thread, which runs until the next `shutdown`: an actor's
    /// jobs always run one at a time on the loop's thread.
    public func shutdown() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ended = inbox.withLock { s -> Bool in
                switch s.phase {
                case .idle, .stopped:
                    s.phase = .stopped
                    return true
                case .running, .stopping:
                    s.phase = .stopping
                    s.whenStopped.append(c)
                    wake()
                    return false
                }
            }
            if ended { c.resume() }
        }
    }

    // MARK: For the sockets

    /// Watches `socket` for answers; the reason when it cannot: epoll refuses
    /// it, or the loop has stopped (this then runs on another thread).
    func register(_ socket: ClientSocket) -> ClientError? {
        guard isCurrent else { return .connectionClosed }
        let id = nextSocketId
        nextSocketId += 1
        var e = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: id))
        guard epoll_ctl(epollFd, EPOLL_CTL_ADD, socket.descriptor, &e) == 0 else {
            return .transport("epoll_ctl for a client connection: \(String(cString: strerror(errno)))")
        }
        socket.id = id
        sockets[id] = socket
        if let period = socket.checkPeriod, tickPeriod.map({ period < $0 }) ?? true {
            tickPeriod = period
            nextTick = .now + period
        }
        return nil
    }

    /// Forgets `socket`, before its descriptor is closed.
    func unregister(_ socket: ClientSocket) {
        guard sockets.removeValue(forKey: socket.id) != nil else { return }
        epoll_ctl(epollFd, EPOLL_CTL_DEL, socket.descriptor, nil)
        if socket.checkPeriod != nil { tickPeriod = sockets.values.compactMap(\.checkPeriod).min() }
    }

    /// Also watches for room to write (the socket's buffer was full), or stops.
    func watchWritable(_ socket: ClientSocket, _ on: Bool) {
        var e = epoll_event(events: EPOLLIN.rawValue | (on ? EPOLLOUT.rawValue : 0), data: epoll_data_t(u64: socket.id))
        epoll_ctl(epollFd, EPOLL_CTL_MOD, socket.descriptor, &e)
    }

    /// `socket` has requests to send: sent once this pass's work is done.
    func noteUnflushed(_ socket: ClientSocket) { unflushed.append(socket) }

    // MARK: The loop

    private func run() {
        thread.store(UInt(pthread_self()), ordering: .releasing)
        lg_name_thread("lg-client-loop")
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            runReady()
            let stopping = takeInbox()
            if !ready.isEmpty { continue }
            if stopping { break }
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epollFd, $0.baseAddress, Int32($0.count), timeoutMs()) }
            // Only a bad descriptor or argument fails it (EBADF, EFAULT, EINVAL): ours, never a peer's.
            if n < 0 && errno != EINTR { preconditionFailure("epoll_wait: \(String(cString: strerror(errno)))") }
            for i in 0..<max(Int(n), 0) {
                let (id, flags) = (events[i].data.u64, events[i].events)
                if id == Self.wakeId {
                    var count: UInt64 = 0
                    _ = Glibc.read(wakeFd, &count, MemoryLayout<UInt64>.size)
                    continue
                }
                guard let s = sockets[id] else { continue }  // ended earlier in this batch
                if flags & EPOLLOUT.rawValue != 0 { s.flush() }
                if flags & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { s.readable() }
            }
            if let period = tickPeriod, ContinuousClock.now >= nextTick {
                nextTick = .now + period
                for s in Array(sockets.values) { s.checkTimeout() }
            }
        }
        stop()
    }

    /// Runs what is ready, and what that makes ready, then sends what it wrote.
    private func runReady() {
        while !ready.isEmpty {
            swap(&ready, &running)
            for work in running {
                switch work {
                case .job(let job): job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
                case .body(let body), .connectionWork(let body, _): body()
                }
            }
            running.removeAll(keepingCapacity: true)
        }
        for s in unflushed { s.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    /// Moves what other threads handed over into `ready`; true once `shutdown` was called.
    private func takeInbox() -> Bool {
        inbox.withLock { s in
            if !s.work.isEmpty {
                ready.append(contentsOf: s.work)
                s.work.removeAll(keepingCapacity: true)
            }
            return s.phase == .stopping
        }
    }

    private func timeoutMs() -> Int32 {
        guard tickPeriod != nil else { return -1 }
        let left = ContinuousClock.now.duration(to: nextTick)
        return Int32(clamping: max(0, left.clampedMilliseconds + 1))
    }

    /// The end of the thread: every connection fails its calls, and what they
    /// make ready runs. Work handed over meanwhile goes to the next thread.
    private func stop() {
        for s in Array(sockets.values) { s.end(.connectionClosed) }
        runReady()
        // Left as a new thread finds it: from the lock's release on, another thread may own this state.
        (sockets, unflushed, tickPeriod) = ([:], [], nil)
        let (late, waiters) = inbox.withLock { s in
            s.phase = .stopped
            // Before the lock is let go: a new thread, started once it is, stores its own.
            thread.store(0, ordering: .releasing)
            // Closed under the lock that `wake` writes under; -1 after, so a number the system reuses is never ours.
            Glibc.close(epollFd)
            Glibc.close(wakeFd)
            (epollFd, wakeFd) = (-1, -1)
            defer { s.work = []; s.whenStopped = [] }
            return (s.work, s.whenStopped)
        }
        for work in late {
            if case .connectionWork(_, let dropped) = work {
                dropped()  // the connection it was for has ended
            } else {
                hand(work)
            }
        }
        for w in waiters { w.resume() }
    }
}
