import Foundation
import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Synchronization
import Testing

/// Where the socket's reads split a stream of frames is the peer's choice,
/// not the server's: anywhere in a header, a small frame or a large one, with
/// the rest arriving later or together with the next frames. The epoll loop
/// reads into its own buffer and a connection keeps the start of a frame in a
/// spare buffer that goes back to the loop when emptied, so a wrong hand-off
/// would show as a frame that reads another connection's bytes.
@Suite("frames split anywhere", .serialized)
struct FrameSplitTests {
    enum Expected { case page([UInt8]), put(UInt64), status }

    /// One connection's stream: GetPages of cached pages, PutRecords of 1 to
    /// 9 images into its own tenant (those of more than 7 are over the 64 KiB
    /// of a small frame, so their budget is reserved), and TenantStatus.
    static func stream(_ tenant: String, seed: UInt64) -> (bytes: [UInt8], expected: [UInt64: Expected], pages: [UInt32: [UInt8]]) {
        var random = SeededRandom(seed: seed)
        var bytes: [UInt8] = []
        var expected: [UInt64: Expected] = [:]
        var pages: [UInt32: [UInt8]] = [:]
        var lsn: UInt64 = 10
        var block: UInt32 = 100
        for id in 1...300 as ClosedRange<UInt64> {
            let body: Wire.Request.Body
            switch random.next() % 10 {
            case 0..<6:
                let b = UInt32(random.next() % 40 + 1)
                body = .getPage(Wire.GetPageRequest(tenantId: tenant, key: wkey(b), lsn: 10))
                expected[id] = .page(wpage(UInt64(b) << 32 | 10))
            case 6..<9:
                let count = Int(random.next() % 9) + 1
                let records = (0..<count).map { _ in
                    lsn += 1
                    block += 1
                    pages[block] = wpage(UInt64(block) << 32 | lsn)
                    return wimage(block, lsn)
                }
                body = .putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: records))
                expected[id] = .put(lsn)
            default:
                body = .tenantStatus(Wire.TenantStatusRequest(tenantId: tenant))
                expected[id] = .status
            }
            bytes += Wire.frame(Wire.encode(Wire.Request(requestId: id, body: body)))
        }
        return (bytes, expected, pages)
    }

    @Test(arguments: ServerTests.eventLoops) func framesSplitAnywhereOnManyConnectionsAreEachAnsweredOnce(eventLoop: String) async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir, extraArgs: ["--event-loop", eventLoop])
        let c = try await server.client()
        let tenants = (0..<6).map { String(format: "f0000000000000000000000000000%03x", $0) }
        for t in tenants {
            try await c.createTenant(t)
            _ = try await c.putRecords(tenant: t, (1...40 as ClosedRange<UInt32>).map { wimage($0, 10) })
        }
        let streams = tenants.enumerated().map { i, t in Self.stream(t, seed: UInt64(i) + 1) }
        let raws = try tenants.map { _ in try RawConnection(dir.socket) }
        // Each stream goes out in pieces of 1 byte to 96 KiB, now and then after a pause,
        // so the server's reads end anywhere: in a header, in a frame, in a large frame.
        let senders = zip(raws, streams).enumerated().map { i, pair in
            let (fd, bytes) = (pair.0.fd, pair.1.bytes)
            let thread = Thread {
                var random = SeededRandom(seed: 1000 + UInt64(i))
                var at = 0
                while at < bytes.count {
                    let size: Int
                    switch random.next() % 10 {
                    case 0..<2: size = Int(random.next() % 16) + 1
                    case 2..<6: size = Int(random.next() % 4096) + 1
                    default: size = Int(random.next() % (96 << 10)) + 1
                    }
                    let end = min(bytes.count, at + size)
                    while at < end {
                        let n = bytes[at..<end].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        if n <= 0 { return }
                        at += n
                    }
                    if random.next() % 8 == 0 { usleep(500) }
                }
            }
            thread.start()
            return thread
        }
        _ = senders
        try await Task.sleep(for: .milliseconds(300))  // answers pile up: the server holds connections back
        for (i, (raw, stream)) in zip(raws, streams).enumerated() {
            var answered = Set<UInt64>()
            while answered.count < stream.expected.count, let frame = await raw.readFrame() {
                let answer = try Wire.decodeResponse(frame)
                #expect(answered.insert(answer.requestId).inserted, "connection \(i): request \(answer.requestId) answered twice")
                switch (stream.expected[answer.requestId], answer.body) {
                case (.page(let page)?, .getPage(let p)?):
                    #expect(p.page == page, "connection \(i), request \(answer.requestId): the wrong page")
                case (.put(let lsn)?, .putRecords(let p)?):
                    // The tenant's last record LSN once the put is durable: later puts of the same group commit count.
                    #expect(p.lastRecordLsn >= lsn, "connection \(i), request \(answer.requestId): put acknowledged at \(p.lastRecordLsn), below its \(lsn)")
                case (.status?, .tenantStatus?): break
                default: Issue.record("connection \(i), request \(answer.requestId): unexpected \(String(describing: answer.body).prefix(200))")
                }
            }
            #expect(answered.count == stream.expected.count, "connection \(i): \(stream.expected.count - answered.count) answers missing")
        }
        // What the puts stored is what was sent, page for page.
        for (t, stream) in zip(tenants, streams) {
            for (block, page) in stream.pages {
                #expect(try await c.getPage(tenant: t, key: wkey(block)).page == page, "tenant \(t), block \(block)")
            }
        }
        await c.close()
        #expect(await server.stop() == 0)
    }
}
