import LayerGateClient
import LayerGateTestSupport
import LayerGateWire
import Testing

/// `getPages(…, into:)` of both clients: pages read into memory the caller
/// keeps, as the C client's `lg_get_pages` reads them. The same bytes as
/// `getPages`, a failed read leaves its page as it was, and the caller's
/// array is written in place, not copied.
@Suite("pages read into the caller's memory", .serialized)
struct PagesIntoCallerMemoryTests {
    static let untouched: UInt8 = 0xA5

    @Test func bothClientsReadTheSamePagesAsGetPagesAndLeaveAFailedReadsPageAlone() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, (0..<40).map { wimage($0, UInt64($0) + 1) })
        // Block 999 was never written: its read fails alone.
        let keys = (0..<40).map { wkey(UInt32($0)) } + [wkey(999)] + [wkey(3), wkey(3)]
        let expected = await c.getPages(tenant: tenantA, keys: keys)

        var memory = [UInt8](repeating: Self.untouched, count: 3 * Wire.pageBytes)  // grown to fit
        let viaAsync = await c.getPages(tenant: tenantA, keys: keys, into: &memory)
        Self.check(viaAsync, memory, against: expected)
        let socket = dir.socket
        let viaBlocking = try await onThread { () throws(ClientError) in
            let b = try LayerGateConnection(socketPath: socket, timeout: .seconds(30))
            var memory = [UInt8](repeating: Self.untouched, count: 100 * Wire.pageBytes)  // shrunk to fit
            return (b.getPages(tenant: tenantA, keys: keys, into: &memory), memory)
        }
        Self.check(viaBlocking.0, viaBlocking.1, against: expected)

        // No keys: no pages, no requests.
        var none = [UInt8](repeating: 1, count: 10)
        #expect(await c.getPages(tenant: tenantA, keys: [], into: &none).isEmpty)
        #expect(none.isEmpty)
        await c.close()
        #expect(await server.stop() == 0)
    }

    static func check(_ outcomes: [Result<UInt64, ClientError>], _ memory: [UInt8],
                      against expected: [Result<Wire.GetPageResponse, ClientError>],
                      sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(outcomes.count == expected.count, sourceLocation: sourceLocation)
        #expect(memory.count == expected.count * Wire.pageBytes, sourceLocation: sourceLocation)
        for (i, (outcome, want)) in zip(outcomes, expected).enumerated() {
            let page = Array(memory[(i * Wire.pageBytes)..<((i + 1) * Wire.pageBytes)])
            switch (outcome, want) {
            case (.success(let lsn), .success(let response)):
                #expect(lsn == response.lsn && page == response.page, "page \(i)", sourceLocation: sourceLocation)
            case (.failure(let e), .failure(let f)):
                #expect(e == f, sourceLocation: sourceLocation)
                #expect(page.allSatisfy { $0 == untouched } || page.allSatisfy { $0 == 0 }, "failed read \(i) wrote its page",
                        sourceLocation: sourceLocation)
            default:
                Issue.record("read \(i): \(outcome), where getPages had \(want)", sourceLocation: sourceLocation)
            }
        }
    }

    /// The loop writes each page into the caller's own array while the call
    /// waits: batch after batch, the pages land in the same storage, whatever
    /// thread the caller and the loop run on.
    @Test func theLoopWritesIntoTheCallersArrayNotACopy() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let c = try await server.client()
        try await c.createTenant(tenantA)
        try await c.putRecords(tenant: tenantA, (0..<16).map { wimage($0, UInt64($0) + 1) })
        var memory = [UInt8](repeating: 0, count: 16 * Wire.pageBytes)
        let storage = memory.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        var moved = 0
        for round in 0..<200 {
            let keys = (0..<16).map { wkey(UInt32(($0 + round) % 16)) }
            let outcomes = await c.getPages(tenant: tenantA, keys: keys, into: &memory)
            #expect(outcomes.allSatisfy { if case .success = $0 { true } else { false } })
            if memory.withUnsafeBytes({ UInt(bitPattern: $0.baseAddress) }) != storage { moved += 1 }
            let first = Array(memory[0..<Wire.pageBytes])
            #expect(first == wpage(UInt64(round % 16) << 32 | UInt64(round % 16 + 1)))
        }
        #expect(moved == 0, "batches whose pages went into a copy of the caller's array")
        await c.close()
        #expect(await server.stop() == 0)
    }
}

extension HostilePeerClientTests {
    /// A hostile answer to a read into the caller's memory: the same errors as
    /// for `getPages`, and the caller's page left as it was.
    @Test(arguments: HostileAnswer.allCases)
    func everyBadAnswerToAReadIntoCallerMemoryIsAnError(_ answer: HostileAnswer) async throws {
        let (dir, peer, path) = try Self.peer(answering: answer)
        defer { _ = (dir, peer) }
        let c = try await LayerGateClient.connect(socketPath: path, timeout: .seconds(10), maxFrameBytes: 1 << 20)
        var memory = [UInt8](repeating: PagesIntoCallerMemoryTests.untouched, count: Wire.pageBytes)
        let first = await c.getPages(tenant: tenantA, keys: [wkey(1)], into: &memory)[0]
        answer.check(first, frameLimitError: { if case .unexpectedResponse(let why) = $0 { why.contains("limit") } else { false } })
        if case .success = first {
            #expect(memory == [UInt8](repeating: 5, count: Wire.pageBytes))
        } else {
            #expect(memory == [UInt8](repeating: PagesIntoCallerMemoryTests.untouched, count: Wire.pageBytes))
        }
        let second = await c.getPages(tenant: tenantA, keys: [wkey(1)], into: &memory)[0]
        answer.checkTheCallAfter(first, second)
        await c.close()
    }
}
