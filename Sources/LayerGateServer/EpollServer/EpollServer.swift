import CSystemShims
import Foundation
import LayerGateStorage
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The data path of `layergated`: one thread, one epoll set, every client
/// connection of the Unix socket. Level-triggered; a readable socket is read
/// once per wake-up into one buffer the loop reuses, its frames taken by its
/// `Connection`, and its answers sent with one `send`.
///
/// Why not SwiftNIO here: on these machines a SwiftNIO echo server did about
/// 0.6× the round trips of a C one, before any protocol work, and a cached
/// GetPage spent most of its time in the channel pipeline's machinery
/// (docs/ARCHITECTURE.md, "The data path"). SwiftNIO still serves `/metrics`.
///
/// State is confined to the loop thread, except `queue` (any thread) and
/// `stop` (any thread, through the queue).
final class EpollServer: @unchecked Sendable {
    private let epollFd: Int32
    private let queue: LoopQueue
    /// Set by `serve`, before the thread starts.
    private var settings: ConnectionSettings?
    private let acceptBackoff: Duration
    /// `ServerConfig.busyPoll`, and when the last event came.
    private let busyPoll: Duration
    private var lastEvent = ContinuousClock.now
    private let logger: Logger

    private var listenFd: Int32 = -1
    /// The loop's own reads of GetPage misses (nil: read threads serve them).
    private(set) var kernelReads: KernelReads?
    /// How often the loop handed its disk reads to the kernel (for /metrics).
    let kernelReadCounts = KernelReads.Counts()
    // `@exclusivity(unchecked)` on what every event touches: loop-thread
    // state, never accessed under an access to itself (see SocketConnection).
    @exclusivity(unchecked) private var connections: [UInt64: SocketConnection] = [:]
    private var nextId: UInt64 = EpollServer.firstConnectionId
    /// Connections whose unsent bytes fell under the low water mark during an event.
    @exclusivity(unchecked) private var becameWritable: [SocketConnection] = []
    /// The list being told, swapped with `becameWritable`: both keep their
    /// capacity, where a new list for each pass allocated (an eighth of the
    /// cached GetPages at 8 connections × 16 in flight).
    @exclusivity(unchecked) private var notifying: [SocketConnection] = []
    @exclusivity(unchecked) private var readBuffer: ByteBuffer?
    /// Answer buffers sent empty, for the next connection with answers to send.
    @exclusivity(unchecked) private var spareOut: [ByteBuffer] = []
    /// Read-sized buffers let go of empty, for connections that keep the start of a frame between reads.
    @exclusivity(unchecked) private var spareIn: [ByteBuffer] = []
    private var acceptPausedUntil: ContinuousClock.Instant?
    private var nextTick = ContinuousClock.now + .seconds(1)
    private var running = true
    private var finished: CheckedContinuation<Void, Never>?
    /// Set once the thread runs: before that, nothing would take the queue's tasks.
    private let started = Atomic<Bool>(false)

    private static let listenerId: UInt64 = 0
    private static let queueId: UInt64 = 1
    private static let kernelReadsId: UInt64 = 2
    private static let firstConnectionId: UInt64 = 3
    private static let readBufferBytes = 64 << 10
    /// Spare answer buffers kept, each up to `spareOutCapacity` (the high water mark and a page, rounded up).
    /// Kept by the loop, not by each connection: a buffer per connection, long-lived among
    /// short-lived ones, grew the heap by 2.5 KiB per connection made (1,000 that each sent a request and closed, 5 times over).
    private static let spareOutCount = 32
    private static let spareOutCapacity = 128 << 10
    /// Spare read buffers kept (64 KiB each): as many as connections that hold part of a frame at once, commonly.
    private static let spareInCount = 16

    /// The epoll set and its wake-up descriptor, taken before the tenants load
    /// (they can take every descriptor there is); the thread starts in `serve`.
    init(acceptBackoff: Duration, busyPoll: Duration = .zero, kernelReads useKernelReads: Bool, logger: Logger) throws(ServerError) {
        epollFd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epollFd >= 0 else { throw ServerError.socket("epoll_create1: \(String(cString: strerror(errno)))") }
        do { queue = try LoopQueue() } catch {
            Glibc.close(epollFd)
            throw error
        }
        self.acceptBackoff = acceptBackoff
        self.busyPoll = busyPoll
        self.logger = logger
        add(queue.eventFd, id: Self.queueId, events: UInt32(EPOLLIN.rawValue))
        if useKernelReads {
            switch KernelReads.open(counts: kernelReadCounts) {
            case .success(let reads):
                kernelReads = reads
                add(reads.eventFd, id: Self.kernelReadsId, events: UInt32(EPOLLIN.rawValue))
            case .failure(let e):
                logger.notice("no io_uring (\(e)): GetPage misses go to read threads")
            }
        }
    }

    deinit {
        kernelReads?.close()  // a server never started: nothing is in flight
        Glibc.close(epollFd)
    }

    /// Serves `listener` (a listening, non-blocking socket) on a thread of its own.
    func serve(_ listener: Int32, settings: ConnectionSettings) {
        self.settings = settings
        listenFd = listener
        add(listener, id: Self.listenerId, events: UInt32(EPOLLIN.rawValue))
        started.store(true, ordering: .releasing)
        // Named from inside: Foundation's `Thread.name`, set before start, never reached the
        // kernel here, and `top -H`, `perf` and /proc showed the data path as a dispatch thread.
        let thread = Thread { [self] in
            lg_name_thread("layergated-data")
            run()
        }
        thread.start()
    }

    /// No new connections; those open are served on.
    func stopAccepting() async {
        guard started.load(ordering: .acquiring) else { return }
        await onLoop { s in
            guard s.listenFd >= 0 else { return }
            epoll_ctl(s.epollFd, EPOLL_CTL_DEL, s.listenFd, nil)
            Glibc.close(s.listenFd)
            s.listenFd = -1
        }
    }

    /// Shutdown: every connection takes no more requests; each answers what
    /// it was sent whole and closes once the answers are out. One whose peer
    /// does not read them stays until the shutdown's grace ends.
    func endInput() async {
        guard started.load(ordering: .acquiring) else { return }
        await onLoop { s in
            for c in Array(s.connections.values) { c.endInput() }
            s.notifyWritable()
        }
    }

    /// Closes every connection and ends the thread; returns once it has.
    func shutdown() async {
        guard started.load(ordering: .acquiring) else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queue.execute { [self] in
                for c in Array(connections.values) { c.close() }
                if listenFd >= 0 {
                    Glibc.close(listenFd)
                    listenFd = -1
                }
                finished = c
                running = false
            }
        }
    }

    private func onLoop(_ body: @escaping @Sendable (EpollServer) -> Void) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queue.execute { [self] in
                body(self)
                c.resume()
            }
        }
    }

    // MARK: the loop

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        var ran: [LoopQueue.Job] = []
        while running {
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epollFd, $0.baseAddress, Int32($0.count), timeoutMs()) }
            // Only a bad descriptor or argument fails it (EBADF, EFAULT, EINVAL): ours, never a peer's.
            if n < 0 && errno != EINTR { preconditionFailure("epoll_wait: \(String(cString: strerror(errno)))") }
            for i in 0..<max(Int(n), 0) {
                let (id, flags) = (events[i].data.u64, events[i].events)
                switch id {
                case Self.listenerId: acceptAll()
                case Self.queueId:
                    queue.take(into: &ran)
                    for task in ran {
                        task()
                        notifyWritable()
                    }
                    ran.removeAll(keepingCapacity: true)
                case Self.kernelReadsId:
                    kernelReads?.reap()
                default:
                    guard let c = connections[id] else { continue }  // closed earlier in this batch
                    if flags & UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
                        c.close()  // the peer is gone both ways: nothing it sent can be answered
                    } else {
                        if flags & UInt32(EPOLLOUT.rawValue) != 0 { c.flush() }
                        if flags & UInt32(EPOLLIN.rawValue) != 0 { c.readable() }
                    }
                }
                notifyWritable()
            }
            let now = ContinuousClock.now
            if n > 0 { lastEvent = now }
            if let until = acceptPausedUntil, now >= until {
                acceptPausedUntil = nil
                if listenFd >= 0 { add(listenFd, id: Self.listenerId, events: UInt32(EPOLLIN.rawValue)) }
            }
            if now >= nextTick {
                nextTick = now + .seconds(1)
                tick(now)
            }
            // The disk reads this pass started, entered together before the loop sleeps.
            kernelReads?.submit()
        }
        // Reads in flight write into the ring's buffers: wait for them before letting go.
        kernelReads?.close()
        kernelReads = nil
        let done = finished
        finished = nil
        done?.resume()
    }

    /// Until the next second's timeout check, or the end of an accept pause;
    /// zero (a poll) within `busyPoll` of the last event.
    private func timeoutMs() -> Int32 {
        let now = ContinuousClock.now
        if busyPoll > .zero, lastEvent.duration(to: now) < busyPoll { return 0 }
        var until = nextTick
        if let paused = acceptPausedUntil, paused < until { until = paused }
        let left = now.duration(to: until)
        return Int32(clamping: max(0, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1))
    }

    private func tick(_ now: ContinuousClock.Instant) {
        for c in Array(connections.values) {
            if let since = c.closingSince, since.duration(to: now) > closeGrace {
                c.close()  // its peer does not read the answer that explains the close
            } else {
                c.connection?.checkTimeouts()
            }
        }
        notifyWritable()
        ClosedConnections.trimIfMany()
    }

    private func notifyWritable() {
        while !becameWritable.isEmpty {
            swap(&becameWritable, &notifying)  // those told may note others meanwhile
            for c in notifying where !c.closed && c.isWritable { c.connection?.writabilityChanged() }
            notifying.removeAll(keepingCapacity: true)
        }
    }

    // MARK: accepting

    private func acceptAll() {
        for _ in 0..<64 {
            guard listenFd >= 0 else { return }
            let fd = lg_accept_nonblocking(listenFd)
            if fd < 0 {
                switch errno {
                case EAGAIN: return
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors: pause accepting instead of spinning on the error.
                    logger.warning("accept paused: \(String(cString: strerror(errno)))")
                    epoll_ctl(epollFd, EPOLL_CTL_DEL, listenFd, nil)
                    acceptPausedUntil = .now + acceptBackoff
                    return
                default: continue  // that peer is gone (ECONNABORTED), or a signal
                }
            }
            var cred = lg_peer_credentials()
            var length = socklen_t(MemoryLayout<lg_peer_credentials>.size)
            guard getsockopt(fd, SOL_SOCKET, lg_so_peercred(), &cred, &length) == 0, let settings else {
                Glibc.close(fd)
                continue
            }
            let id = nextId
            nextId += 1
            let connection = Connection<SocketConnection>(settings, peer: PeerIdentity(uid: cred.uid, pid: cred.pid))
            let socket = SocketConnection(id: id, fd: fd, server: self, connection: connection)
            connections[id] = socket
            add(fd, id: id, events: UInt32(EPOLLIN.rawValue))
            connection.attach(socket, loop: queue)
            connection.active()
            if !socket.closed { connection.readRequested() }
        }
    }

    // MARK: for the connections

    /// The loop's read buffer, empty; `giveBack` returns it for the next read.
    func takeReadBuffer() -> ByteBuffer {
        guard var b = readBuffer else { return ByteBufferAllocator().buffer(capacity: Self.readBufferBytes) }
        readBuffer = nil
        b.clear()
        return b
    }

    /// A connection that kept a reference (a partial frame) makes the next read allocate its own.
    func giveBack(_ b: ByteBuffer) { readBuffer = b }

    /// An empty buffer the size of the loop's, for a connection to keep the start of a frame in.
    func takeSpareReadBuffer() -> ByteBuffer {
        // Cleared once out of the array, where it is the one reference: clearing a shared buffer would copy it.
        guard var b = spareIn.popLast() else { return ByteBufferAllocator().buffer(capacity: Self.readBufferBytes) }
        b.clear()
        return b
    }

    /// A connection's kept buffer, let go of: kept as a spare, or let go (grown, or enough spares).
    func giveBackSpare(_ b: ByteBuffer) {
        guard spareIn.count < Self.spareInCount, b.capacity == Self.readBufferBytes else { return }
        spareIn.append(b)
    }

    /// An empty answer buffer: a spare, or a new one the size of a page's answer.
    func takeOutBuffer() -> ByteBuffer {
        spareOut.popLast() ?? ByteBufferAllocator().buffer(capacity: pageFrameCapacity)
    }

    /// An answer buffer all sent, and cleared: kept as a spare, or let go.
    func giveBackOut(_ b: ByteBuffer) {
        guard spareOut.count < Self.spareOutCount, b.capacity <= Self.spareOutCapacity else { return }
        spareOut.append(b)
    }

    func watch(_ c: SocketConnection, for events: UInt32) {
        var e = epoll_event(events: events, data: epoll_data_t(u64: c.id))
        epoll_ctl(epollFd, EPOLL_CTL_MOD, c.fd, &e)
    }

    func noteWritable(_ c: SocketConnection) { becameWritable.append(c) }

    func forget(_ c: SocketConnection) {
        epoll_ctl(epollFd, EPOLL_CTL_DEL, c.fd, nil)
        Glibc.close(c.fd)
        connections[c.id] = nil
        ClosedConnections.noteClosed()
    }

    private func add(_ fd: Int32, id: UInt64, events: UInt32) {
        var e = epoll_event(events: events, data: epoll_data_t(u64: id))
        epoll_ctl(epollFd, EPOLL_CTL_ADD, fd, &e)
    }
}
