import CSystemShims
import LayerGateStorage
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Reads of layer-file blocks that the event loop makes itself, through an
/// io_uring whose completions wake the loop's epoll set. Why: a GetPage miss
/// handed to a read thread and back costs two wake-ups (a futex, then the
/// loop's eventfd) on top of the disk's; on 2 cores shared with the clients
/// they cost about as much as the disk (docs/ARCHITECTURE.md, "Cold reads").
/// Here the loop submits the read and goes on; the kernel wakes it once.
/// The reads a pass of the loop starts are entered together at its end
/// (`submit`): one system call and one doorbell of the disk for all of them.
///
/// Loop-confined: made, used and closed on the loop thread.
final class KernelReads {
    /// What a read's requester is told: the bytes (valid only during the call), or nil when it failed or came short.
    typealias Done = (UnsafeRawBufferPointer?) -> Void

    private struct Pending {
        let miss: BlockMiss
        let buffer: UnsafeMutableRawBufferPointer
        let done: Done
    }

    /// Counted for /metrics, which reads it from another thread.
    final class Counts: Sendable {
        /// Times the queued reads were handed to the kernel (one `io_uring_enter` each).
        let submissions = Atomic<Int>(0)
    }

    let eventFd: Int32
    private let counts: Counts
    private let ring: OpaquePointer
    private var pending: [UInt64: Pending] = [:]
    /// Tags of the reads started since the last `submit`, in order, and the
    /// arrays it works in (kept, so that a submit allocates nothing).
    private var queued: [UInt64] = []
    private var entering: [UInt64] = []
    private var placed: [Int] = []
    private var nextTag: UInt64 = 0
    /// Read buffers of `bufferBytes`, aligned for a direct read, kept for the next miss.
    private var spare: [UnsafeMutableRawBufferPointer] = []

    /// Reads in flight past this go to read threads: the completion ring (twice
    /// the submission ring) then never overflows.
    static let maxInFlight = 128
    private static let ringEntries: UInt32 = 128
    /// The largest run the read path asks for at once.
    static let bufferBytes = BlockMiss.maxByteCount
    private static let reapBatch = 32
    /// Where `takeCompletions` collects a batch: kept, so that a reap allocates nothing.
    private var tags = [UInt64](repeating: 0, count: KernelReads.reapBatch)
    private var results = [Int32](repeating: 0, count: KernelReads.reapBatch)

    /// Nil, with the reason, where the kernel has no io_uring or forbids it:
    /// misses then go to read threads as before.
    static func open(counts: Counts) -> Result<KernelReads, SystemError> {
        let efd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard efd >= 0 else { return .failure(SystemError(errno)) }
        guard let ring = lg_uring_open(ringEntries, efd) else {
            let e = errno
            Glibc.close(efd)
            return .failure(SystemError(e))
        }
        return .success(KernelReads(ring: ring, eventFd: efd, counts: counts))
    }

    private init(ring: OpaquePointer, eventFd: Int32, counts: Counts) {
        self.ring = ring
        self.eventFd = eventFd
        self.counts = counts
    }

    /// Starts a read of `miss`'s blocks at the next `submit`; `done` runs on
    /// the loop when it ends, or fails (nil) when the kernel did not take it.
    /// False (and `done` never runs) when it cannot be started: too many in
    /// flight, or no direct descriptor open.
    ///
    /// Direct descriptors only (`--layer-reads direct`). Through the OS page
    /// cache an io_uring read that misses it starts the read-ahead (up to
    /// `read_ahead_kb`, 8 MiB on these VMs) and later copies the bytes, both
    /// on the loop thread: at past LSNs 30-32k GetPages a second against
    /// 40-42k with read threads, p99 913-930 µs against 684-737 (docs/ARCHITECTURE.md).
    func read(_ miss: BlockMiss, _ done: @escaping Done) -> Bool {
        guard pending.count < Self.maxInFlight, miss.byteCount <= Self.bufferBytes,
              miss.withDirectDescriptor({ _ in 0 }) != nil else { return false }
        guard let buffer = spare.popLast() ?? Self.allocate() else { return false }
        let tag = nextTag
        nextTag += 1
        pending[tag] = Pending(miss: miss, buffer: buffer, done: done)
        queued.append(tag)
        return true
    }

    /// Enters the reads queued since the last call. Each one's descriptor is
    /// held open (its slot in the open-file table) until the kernel has taken
    /// the file; a read whose descriptor was closed meanwhile, or that the
    /// kernel did not take, fails, and its requester reads on a read thread.
    func submit() {
        while !queued.isEmpty {
            swap(&queued, &entering)  // a failure's `done` may queue reads: the next round enters them
            placed.removeAll(keepingCapacity: true)
            // The kernel took the first `taken` placed, in order; `placed` is ascending.
            let taken = Int(max(0, place(from: 0)))
            if !placed.isEmpty { counts.submissions.add(1, ordering: .relaxed) }
            var next = 0
            for (i, tag) in entering.enumerated() {
                if next < taken && placed[next] == i { next += 1 } else { finish(tag, result: -1) }
            }
            entering.removeAll(keepingCapacity: true)
        }
    }

    /// Puts `entering[index...]` in the ring, each inside the call that holds
    /// its descriptor open, and enters them all from the innermost one.
    private func place(from index: Int) -> Int32 {
        guard index < entering.count else { return placed.isEmpty ? 0 : lg_uring_submit(ring) }
        let tag = entering[index]
        guard let p = pending[tag] else { return place(from: index + 1) }
        let ring = self.ring
        return p.miss.withDirectDescriptor { fd in
            if lg_uring_queue_read(ring, fd, p.buffer.baseAddress, UInt32(p.miss.byteCount), UInt64(p.miss.offset), tag) == 0 {
                placed.append(index)
            }
            return place(from: index + 1)
        } ?? place(from: index + 1)
    }

    /// The eventfd is readable: runs `done` of every read that ended.
    func reap() {
        var count: UInt64 = 0
        _ = Glibc.read(eventFd, &count, MemoryLayout<UInt64>.size)
        takeCompletions()
    }

    private func takeCompletions() {
        while true {
            let n = Int(lg_uring_reap(ring, &tags, &results, UInt32(Self.reapBatch)))
            if n == 0 { return }
            for i in 0..<n { finish(tags[i], result: Int(results[i])) }
        }
    }

    /// Runs the read's `done`: its bytes when it read all it asked for, else nil.
    private func finish(_ tag: UInt64, result: Int) {
        guard let p = pending.removeValue(forKey: tag) else { return }
        let length = p.miss.byteCount
        p.done(result == length ? UnsafeRawBufferPointer(rebasing: p.buffer[0..<length]) : nil)
        spare.append(p.buffer)
    }

    /// Waits for the reads in flight (their `done` runs), then closes the
    /// ring. A ring that cannot be waited on is left open with its buffers:
    /// the kernel may still write into them.
    func close() {
        submit()
        while !pending.isEmpty {
            guard lg_uring_wait(ring, 1) == 0 else { return }
            takeCompletions()
        }
        lg_uring_close(ring)
        Glibc.close(eventFd)
        for b in spare { free(b.baseAddress) }
        spare.removeAll()
    }

    private static func allocate() -> UnsafeMutableRawBufferPointer? {
        var p: UnsafeMutableRawPointer?
        guard posix_memalign(&p, directIOAlignment, bufferBytes) == 0, let p else { return nil }
        return UnsafeMutableRawBufferPointer(start: p, count: bufferBytes)
    }
}
