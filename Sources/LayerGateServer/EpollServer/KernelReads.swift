import CSystemShims
import LayerGateStorage

#if canImport(Glibc)
import Glibc
#endif

/// Reads of layer-file blocks that the event loop makes itself, through an
/// io_uring whose completions wake the loop's epoll set. Why: a GetPage miss
/// handed to a read thread and back costs two wake-ups (a futex, then the
/// loop's eventfd) on top of the disk's; on 2 cores shared with the clients
/// they cost about as much as the disk (docs/ARCHITECTURE.md, "Cold reads").
/// Here the loop submits the read and goes on; the kernel wakes it once.
///
/// Loop-confined: made, used and closed on the loop thread.
final class KernelReads {
    /// What a read's requester is told: the bytes (valid only during the call), or nil when it failed or came short.
    typealias Done = (UnsafeRawBufferPointer?) -> Void

    private struct Pending {
        let buffer: UnsafeMutableRawBufferPointer
        let length: Int
        let done: Done
    }

    let eventFd: Int32
    private let ring: OpaquePointer
    private var pending: [UInt64: Pending] = [:]
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
    static func open() -> Result<KernelReads, SystemError> {
        let efd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard efd >= 0 else { return .failure(SystemError(errno)) }
        guard let ring = lg_uring_open(ringEntries, efd) else {
            let e = errno
            Glibc.close(efd)
            return .failure(SystemError(e))
        }
        return .success(KernelReads(ring: ring, eventFd: efd))
    }

    private init(ring: OpaquePointer, eventFd: Int32) {
        self.ring = ring
        self.eventFd = eventFd
    }

    /// Starts a read of `miss`'s blocks; `done` runs on the loop when it ends.
    /// False (and `done` never runs) when it could not be started: too many in
    /// flight, no direct descriptor open, or the ring refused it.
    ///
    /// Direct descriptors only (`--layer-reads direct`). Through the OS page
    /// cache an io_uring read that misses it starts the read-ahead (up to
    /// `read_ahead_kb`, 8 MiB on these VMs) and later copies the bytes, both
    /// on the loop thread: at past LSNs 30-32k GetPages a second against
    /// 40-42k with read threads, p99 913-930 µs against 684-737 (docs/ARCHITECTURE.md).
    func read(_ miss: BlockMiss, _ done: @escaping Done) -> Bool {
        guard pending.count < Self.maxInFlight, miss.byteCount <= Self.bufferBytes else { return false }
        guard let buffer = spare.popLast() ?? Self.allocate() else { return false }
        let tag = nextTag
        let (ring, count, offset) = (self.ring, UInt32(miss.byteCount), UInt64(miss.offset))
        let submitted = miss.withDirectDescriptor { fd in lg_uring_read(ring, fd, buffer.baseAddress, count, offset, tag) }
        guard submitted == 0 else {
            spare.append(buffer)
            return false
        }
        nextTag += 1
        pending[tag] = Pending(buffer: buffer, length: miss.byteCount, done: done)
        return true
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
            for i in 0..<n {
                guard let p = pending.removeValue(forKey: tags[i]) else { continue }
                let whole = Int(results[i]) == p.length
                p.done(whole ? UnsafeRawBufferPointer(rebasing: p.buffer[0..<p.length]) : nil)
                spare.append(p.buffer)
            }
        }
    }

    /// Waits for the reads in flight (their `done` runs), then closes the
    /// ring. A ring that cannot be waited on is left open with its buffers:
    /// the kernel may still write into them.
    func close() {
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
