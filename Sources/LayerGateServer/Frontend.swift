import Logging
import NIOCore
import NIOPosix
import Synchronization

/// What serves the Unix socket (`ServerConfig.eventLoop`), started and stopped
/// the same way whichever it is.
enum Frontend: Sendable {
    case epoll(EpollServer)
    /// The listening channel is set once bound.
    case nio(MultiThreadedEventLoopGroup, ChannelBox)

    final class ChannelBox: Sendable {
        private let channel = Mutex<(any Channel)?>(nil)
        var value: (any Channel)? {
            get { channel.withLock { $0 } }
            set { channel.withLock { $0 = newValue } }
        }
    }

    init(_ kind: EventLoopKind, acceptBackoff: Duration, busyPoll: Duration, kernelReads: Bool, logger: Logger) throws {
        switch kind {
        case .epoll:
            self = .epoll(try EpollServer(acceptBackoff: acceptBackoff, busyPoll: busyPoll, kernelReads: kernelReads, logger: logger))
        case .nio:
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            // Ends with the group.
            group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in ClosedConnections.trimIfMany() }
            self = .nio(group, ChannelBox())
        }
    }

    /// Times the event loop handed its queued disk reads to the kernel; 0 without io_uring or with SwiftNIO.
    var kernelReadSubmissions: Int {
        if case .epoll(let server) = self { server.kernelReadCounts.submissions.load(ordering: .relaxed) } else { 0 }
    }

    /// No new connections; those open are served on.
    func stopAccepting() async {
        switch self {
        case .epoll(let server): await server.stopAccepting()
        case .nio(_, let box): try? await box.value?.close()
        }
    }

    /// Shutdown: open connections take no more requests, answer what they
    /// were sent whole and close. True where the frontend does that (the epoll
    /// loop); SwiftNIO's connections go on taking requests until `shutdown`.
    func endInput() async -> Bool {
        switch self {
        case .epoll(let server):
            await server.endInput()
            return true
        case .nio: return false
        }
    }

    /// Every connection closed, the loop's thread ended.
    func shutdown() async {
        switch self {
        case .epoll(let server): await server.shutdown()
        case .nio(let group, _): try? await group.shutdownGracefully()
        }
    }
}
