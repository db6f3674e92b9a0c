import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Testing

@testable import LayerGateServer

#if canImport(Glibc)
import Glibc
#endif

/// A page served from memory is sent from where it is (`ImageShare`,
/// `SharedPages`): its answer's frame goes into the connection's buffer
/// without it, and each send gathers the buffer's bytes and the pages in
/// stream order. A page put in the wrong place, sent twice, or changed by
/// what the tenant did after it was read would show here as wrong bytes.
@Suite("pages sent from where they are", .serialized)
struct SharedPageTests {
    /// Through a socket whose buffer takes a few KiB at a time, every send
    /// partial: the reader gets the stream exactly, with pages back to back,
    /// at the very start and end, between bytes of every length, and more of
    /// them than one `sendmsg` gathers.
    @Test func partialSendsKeepTheStreamInOrder() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        var small: Int32 = 4096
        setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var random = SeededRandom(seed: 77)
        var expected: [UInt8] = []
        var buffered: [UInt8] = []
        var shared = SharedPages()
        for i in 0..<200 {
            let gap = i == 0 ? 0 : Int(random.next() % 4 == 0 ? 0 : random.next() % 300)
            let between = (0..<gap).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            buffered += between
            expected += between
            let page = seededPage(UInt64(i) + 1)
            shared.insert(page, at: expected.count)
            expected += page
        }
        // Bytes after the last page.
        let tail = (0..<37).map { UInt8($0) }
        buffered += tail
        expected += tail

        var sent = 0
        var bufferedSent = 0
        var received: [UInt8] = []
        var readBuffer = [UInt8](repeating: 0, count: 65536)
        var sends = 0
        while sent < expected.count || received.count < expected.count {
            if sent < expected.count {
                let n = buffered[bufferedSent...].withUnsafeBytes { shared.send(fds[0], buffered: $0, from: sent) }
                if n > 0 {
                    bufferedSent += shared.sent(from: sent, to: sent + n)
                    sent += n
                    sends += 1
                } else {
                    #expect(n < 0 && errno == EAGAIN, "sendmsg: \(String(cString: strerror(errno)))")
                }
            }
            let r = readBuffer.withUnsafeMutableBytes { recv(fds[1], $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if r > 0 { received += readBuffer[0..<r] }
            if r <= 0 && sent >= expected.count { break }
        }
        #expect(sends > 200, "the sends were not partial: \(sends)")
        #expect(shared.isEmpty)
        #expect(bufferedSent == buffered.count)
        #expect(received.count == expected.count)
        #expect(received == expected)
    }

    /// Answers that wait in the server because their client does not read
    /// them keep the pages they were read as: newer images put meanwhile and
    /// a reset of the tenant (its in-memory layers dropped and read again from
    /// its WAL) change none of their bytes. Then the same keys read anew give
    /// the newer images.
    @Test func answersWaitingToBeSentKeepThePagesTheyWereReadAs() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        let tenant = "5a000000000000000000000000000001"
        try await c.createTenant(tenant)
        let keys = 1...300 as ClosedRange<UInt32>
        _ = try await c.putRecords(tenant: tenant, keys.map { wimage($0, 10) })
        // 300 GetPages, 2.4 MiB of answers: far over what the socket holds, so most wait in the server.
        let raw = try RawConnection(dir.socket)
        var requests: [UInt8] = []
        for (i, k) in keys.enumerated() {
            requests += Wire.frame(Wire.encode(Wire.Request(requestId: UInt64(i + 1),
                                                            body: .getPage(Wire.GetPageRequest(tenantId: tenant, key: wkey(k), latest: true)))))
        }
        raw.sendAllInBackground(requests)
        try await Task.sleep(for: .milliseconds(300))
        // Newer images of every key, then the tenant reset (its in-memory layers dropped and read again from disk).
        _ = try await c.putRecords(tenant: tenant, keys.map { wimage($0, 20) })
        _ = try await c.resetTenant(tenant)
        var answered = 0
        var readBefore = 0
        while answered < keys.count, let frame = await raw.readFrame() {
            let answer = try Wire.decodeResponse(frame)
            let key = keys.lowerBound + UInt32(answer.requestId - 1)
            guard case .getPage(let p)? = answer.body else {
                Issue.record("request \(answer.requestId): \(String(describing: answer.body).prefix(200))")
                break
            }
            // Read before the newer puts (LSN 10), or after them (20): whichever, whole and as it was at that LSN.
            #expect(p.page == wpage(UInt64(key) << 32 | p.lsn), "key \(key) at \(p.lsn): the wrong bytes")
            #expect(p.lsn == 10 || p.lsn == 20, "key \(key): read at \(p.lsn)")
            if p.lsn == 10 { readBefore += 1 }
            answered += 1
        }
        #expect(answered == keys.count)
        #expect(readBefore > 8, "only \(readBefore) answers were waiting through the puts and the reset")
        for k in [keys.lowerBound, 150, keys.upperBound] {
            let p = try await c.getPage(tenant: tenant, key: wkey(k))
            #expect(p.lsn == 20)
            #expect(p.page == wpage(UInt64(k) << 32 | 20))
        }
        await c.close()
        #expect(await server.stop() == 0)
    }
}
