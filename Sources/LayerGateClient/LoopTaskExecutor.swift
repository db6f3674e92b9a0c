import NIOCore

/// A connection's event loop as a task executor. Why: a continuation resumes
/// its task on the generic executor, whatever actor awaited it, and only then
/// hops back; without a preference that is Swift's global pool, so each
/// answered call from code on the loop woke a pool thread and then the loop
/// again. With this as the task's preference while it waits
/// (`ResponseSlot.answers`), the resumed task is queued on the loop that
/// resumed it, and runs there.
final class LoopTaskExecutor: TaskExecutor {
    private let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    /// True on the loop's own thread.
    var isCurrent: Bool { loop.inEventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
