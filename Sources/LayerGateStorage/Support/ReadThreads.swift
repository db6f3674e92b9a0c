import CSystemShims
#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// Threads that only run reads which may block on the disk (GetPage misses).
///
/// Why not the Swift concurrency pool: it has one thread per core, so on a
/// 2-core machine two preads in flight stopped every other task, and eight
/// cold GetPages queued behind each other (p99 14 ms where the disk alone
/// answers in 1.1 ms at the same depth). Why not `BlockingIO`'s queue: a
/// concurrent dispatch queue is also sized by the core count on Linux.
///
/// Threads start on demand, up to `limit`, and then wait for work for the
/// life of the process; a read finds a thread already waiting in the steady state.
public final class ReadThreads: Sendable {
    public typealias Job = @Sendable () -> Void

    private struct State {
        var jobs: [Job] = []
        var head = 0  // jobs before it are taken
        var idle = 0  // threads waiting on `wake`, not yet promised a job
        var threads = 0
    }

    /// Enough for many clients' reads in flight at once: the disk serves a
    /// deep queue faster than a shallow one, and an idle thread costs only its stack.
    public static let shared = ReadThreads(limit: 64)

    let limit: Int
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    init(limit: Int) {
        precondition(limit >= 1, "a pool needs a thread")
        self.limit = limit
    }

    /// Runs `body` on a read thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws(StorageError) -> T) async throws(StorageError) -> T {
        let result: Result<T, StorageError> = await withCheckedContinuation { c in
            submit {
                do throws(StorageError) { c.resume(returning: .success(try body())) } catch { c.resume(returning: .failure(error)) }
            }
        }
        return try result.get()
    }

    /// Runs `job` on a read thread; it must not wait for anything but the disk.
    public func submit(_ job: @escaping Job) {
        enum Start { case signal, spawn, queued }
        let start = state.withLock { s -> Start in
            s.jobs.append(job)
            if s.idle > 0 {
                s.idle -= 1
                return .signal
            }
            guard s.threads < limit else { return .queued }
            s.threads += 1
            return .spawn
        }
        switch start {
        case .signal: wake.signal()
        case .spawn: spawnThread()
        case .queued: break  // a busy thread takes it when it finishes
        }
    }

    /// The next job, or nil after counting this thread as idle (it then waits on `wake`).
    private func next() -> Job? {
        state.withLock { s -> Job? in
            guard s.head < s.jobs.count else {
                s.idle += 1
                return nil
            }
            let job = s.jobs[s.head]
            s.head += 1
            if s.head == s.jobs.count {
                s.jobs.removeAll(keepingCapacity: true)
                s.head = 0
            } else if s.head >= 1024 && s.head * 2 >= s.jobs.count {
                s.jobs.removeFirst(s.head)
                s.head = 0
            }
            return job
        }
    }

    private func work() {
        while true {
            if let job = next() { job() } else { wake.wait() }
        }
    }

    /// Runs what is queued on `BlockingIO`'s threads: never on the caller, which is an event loop.
    private func drainElsewhere() {
        BlockingIO.spawn {
            while let job = self.state.withLock({ s -> Job? in
                guard s.head < s.jobs.count else { return nil }
                defer { s.head += 1 }
                return s.jobs[s.head]
            }) { job() }
        }
    }

    private func spawnThread() {
        let box = Unmanaged.passRetained(self)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        // A read needs little stack: the deepest frame is the read path's 8 KiB page scratch.
        pthread_attr_setstacksize(&attributes, 512 * 1024)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let created = pthread_create(&thread, &attributes, { raw in
            guard let raw else { return nil }
            lg_name_thread("layergated-read")
            Unmanaged<ReadThreads>.fromOpaque(raw).takeRetainedValue().work()
            return nil
        }, box.toOpaque())
        if created != 0 {
            // No new thread (thread limit, memory): the threads that exist take the job.
            // With none at all, the blocking-I/O queue runs it: slower, never lost.
            box.release()
            let alone = state.withLock { s -> Bool in
                s.threads -= 1
                return s.threads == 0
            }
            if alone { drainElsewhere() }
        }
    }
}
