#if canImport(Glibc)
import Glibc
#endif

/// The pages a connection sends from where they are (`ImageShare`: in-memory
/// images), each at its place in the connection's byte stream, between the
/// bytes of its answer buffer. A send gathers both into one `sendmsg`, so
/// such a page is copied once, by the kernel, where building it into the
/// buffer first copied it twice (docs/ARCHITECTURE.md, "The path of a GetPage").
///
/// Positions are counts of bytes since the connection began, as
/// `SocketConnection.appended` and `sent` count them. Loop-confined.
struct SharedPages {
    private struct Page {
        /// Where its first byte is in the stream.
        let at: Int
        let bytes: [UInt8]
        var end: Int { at + bytes.count }
    }

    /// In stream order; the first may be partly sent.
    private var pages: [Page] = []
    /// Iovecs one `sendmsg` takes at most: 32 pages and the bytes between them,
    /// 256 KiB, more than a socket's buffer holds.
    private static let maxSegments = 64

    var isEmpty: Bool { pages.isEmpty }

    /// Puts `bytes` at stream position `at`: after every page put before it.
    mutating func insert(_ bytes: [UInt8], at: Int) {
        precondition(at >= (pages.last?.end ?? 0), "a shared page put before one put earlier")
        pages.append(Page(at: at, bytes: bytes))
    }

    mutating func removeAll() { pages.removeAll(keepingCapacity: true) }

    /// Sends from stream position `sent`, where `buffered` holds the unsent
    /// bytes of the answer buffer, and `pages` go between them. Returns what
    /// `sendmsg` returns (the bytes sent, or -1 with `errno`); then call `sent(from:to:)`.
    func send(_ fd: Int32, buffered: UnsafeRawBufferPointer, from sent: Int) -> Int {
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: Self.maxSegments) { iov in
            gather(into: iov, count: 0, page: 0, cursor: sent, bufferedAt: 0, buffered: buffered) { count in
                var message = msghdr()
                message.msg_iov = iov.baseAddress
                message.msg_iovlen = count
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
        }
    }

    /// Fills `iov` in stream order from `cursor`: the buffered bytes up to the
    /// next page, the page (each page's bytes valid only inside its
    /// `withUnsafeBytes`, hence the recursion), and the buffered rest; then sends.
    private func gather(into iov: UnsafeMutableBufferPointer<iovec>, count: Int, page index: Int, cursor: Int,
                        bufferedAt: Int, buffered: UnsafeRawBufferPointer, send: (Int) -> Int) -> Int {
        var count = count
        guard index < pages.count else {
            if bufferedAt < buffered.count {
                iov[count] = Self.segment(UnsafeRawBufferPointer(rebasing: buffered[bufferedAt...]))
                count += 1
            }
            return send(count)
        }
        // Room for this page, the bytes before it and the buffered rest; else the rest waits for the next send.
        guard count + 3 <= iov.count else { return send(count) }
        let page = pages[index]  // unsent, or partly sent when it is the first (`sent(from:to:)` drops the rest)
        var bufferedAt = bufferedAt
        if page.at > cursor {
            let gap = page.at - cursor
            precondition(bufferedAt + gap <= buffered.count, "a shared page past the end of its connection's answers")
            iov[count] = Self.segment(UnsafeRawBufferPointer(rebasing: buffered[bufferedAt..<bufferedAt + gap]))
            count += 1
            bufferedAt += gap
        }
        let skip = max(0, cursor - page.at)
        return page.bytes.withUnsafeBytes { bytes in
            iov[count] = Self.segment(UnsafeRawBufferPointer(rebasing: bytes[skip...]))
            return gather(into: iov, count: count + 1, page: index + 1, cursor: page.end, bufferedAt: bufferedAt,
                          buffered: buffered, send: send)
        }
    }

    private static func segment(_ bytes: UnsafeRawBufferPointer) -> iovec {
        iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
    }

    /// After a send moved the stream from `old` to `new`: lets go of the
    /// pages wholly sent, and returns how many of the sent bytes were the
    /// answer buffer's (the rest were pages').
    mutating func sent(from old: Int, to new: Int) -> Int {
        var pageBytes = 0
        var whole = 0
        for p in pages where p.at < new {
            pageBytes += min(p.end, new) - max(p.at, old)
            if p.end <= new { whole += 1 }
        }
        pages.removeFirst(whole)
        return new - old - pageBytes
    }
}
