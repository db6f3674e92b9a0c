import CSystemShims
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Closures handed to the epoll loop from other threads (answers from tasks
/// and read threads), run on the loop in the order given. The loop sleeps in
/// `epoll_wait`; an eventfd in its set wakes it, written only when the queue
/// goes from empty to not empty, so a burst of answers costs one wake-up.
final class LoopQueue: LoopExecutor {
    typealias Job = @Sendable () -> Void

    /// Registered in the loop's epoll set; readable while tasks wait.
    let eventFd: Int32
    private let jobs = Mutex<[Job]>([])

    init() throws(ServerError) {
        eventFd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard eventFd >= 0 else { throw ServerError.socket("eventfd: \(String(cString: strerror(errno)))") }
    }

    deinit { Glibc.close(eventFd) }

    func execute(_ task: @escaping Job) {
        let wasEmpty = jobs.withLock { t -> Bool in
            t.append(task)
            return t.count == 1
        }
        if wasEmpty {
            var one: UInt64 = 1
            _ = withUnsafeBytes(of: &one) { Glibc.write(eventFd, $0.baseAddress, 8) }
        }
    }

    /// Swaps what was queued into `ran`, which must be empty (on the loop, when
    /// `eventFd` is readable). Two arrays trade places: a burst of answers
    /// allocates no array for the queue.
    func take(into ran: inout [Job]) {
        var count: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &count) { Glibc.read(eventFd, $0.baseAddress, 8) }
        jobs.withLock { swap(&$0, &ran) }
    }
}
