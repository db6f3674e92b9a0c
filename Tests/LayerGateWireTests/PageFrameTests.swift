import NIOCore
import Testing

@testable import LayerGateWire

@Suite("GetPage answer frames written in place")
struct PageFrameTests {
    struct Refused: Error {}

    static let edges: [UInt64] = [0, 1, 127, 128, 16_383, 16_384, 1 << 32, UInt64.max]

    /// The answer's frame as protobuf-c encodes it.
    static func protobufC(requestId: UInt64, page: [UInt8], lsn: UInt64) -> [UInt8] {
        var packed = ByteBufferAllocator().buffer(capacity: 0)
        Wire.writeFrame(Wire.Response(requestId: requestId, body: .getPage(Wire.GetPageResponse(page: page, lsn: lsn))), into: &packed)
        return Array(packed.readableBytesView)
    }

    static let page = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

    /// Runs `body` for each LSN of `edges`, with protobuf-c's frame of `page` at it.
    static func atEachLsn(requestId: UInt64, _ body: (_ lsn: UInt64, _ packed: [UInt8]) -> Void) {
        for lsn in edges { body(lsn, protobufC(requestId: requestId, page: page, lsn: lsn)) }
    }

    /// The in-place writer and protobuf-c agree on every byte, for ids and
    /// LSNs at each varint length boundary (and zero, which protobuf-c leaves out).
    @Test(arguments: edges)
    func sameBytesAsProtobufC(requestId: UInt64) throws {
        let page = Self.page
        Self.atEachLsn(requestId: requestId) { lsn, packed in
            var inPlace = ByteBufferAllocator().buffer(capacity: 0)
            let wrote = Wire.writePageFrame(requestId: requestId, pageSize: page.count, into: &inPlace) { out -> UInt64? in
                out.copyBytes(from: page)
                return lsn
            }
            #expect(wrote)
            #expect(Array(inPlace.readableBytesView) == packed, "id \(requestId), lsn \(lsn)")
        }
    }

    /// A frame that leaves its page out is the whole frame with the page cut
    /// out where `bytesAfterPage` says: put back there, it is byte for byte
    /// protobuf-c's, for ids and LSNs at each varint length boundary.
    @Test(arguments: edges)
    func aFrameLeavingItsPageOutIsTheWholeFrameWithoutIt(requestId: UInt64) throws {
        let page = Self.page
        Self.atEachLsn(requestId: requestId) { lsn, packed in
            var buffer = ByteBufferAllocator().buffer(capacity: 0)
            buffer.writeString("earlier answers")
            let earlier = buffer.readableBytes
            let written = Wire.writePageFrame(requestId: requestId, pageSize: page.count, into: &buffer) { out -> Wire.FilledPage? in
                out.initializeMemory(as: UInt8.self, repeating: 0xEE)  // not the page: it must not be sent
                return Wire.FilledPage(lsn: lsn, wrote: false)
            }
            guard case .pageLeftOut(let after)? = written else {
                Issue.record("id \(requestId), lsn \(lsn): \(String(describing: written))")
                return
            }
            var bytes = Array(buffer.readableBytesView.dropFirst(earlier))
            #expect(bytes.count == packed.count - page.count, "id \(requestId), lsn \(lsn)")
            bytes.insert(contentsOf: page, at: bytes.count - after)
            #expect(bytes == packed, "id \(requestId), lsn \(lsn)")
            // Written whole, the same call says so.
            var whole = ByteBufferAllocator().buffer(capacity: 0)
            let wholeWritten = Wire.writePageFrame(requestId: requestId, pageSize: page.count, into: &whole) { out -> Wire.FilledPage? in
                out.copyBytes(from: page)
                return Wire.FilledPage(lsn: lsn, wrote: true)
            }
            #expect(wholeWritten == .whole)
            #expect(Array(whole.readableBytesView) == packed)
        }
    }

    /// Nothing is left behind when the page cannot be served inline or its read fails.
    @Test func aRefusedPageLeavesTheBufferAsItWas() throws {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        buffer.writeString("earlier answers")
        let before = Array(buffer.readableBytesView)
        #expect(!Wire.writePageFrame(requestId: 9, pageSize: 8192, into: &buffer) { _ -> UInt64? in nil })
        #expect(Array(buffer.readableBytesView) == before)
        #expect(throws: Refused.self) {
            try Wire.writePageFrame(requestId: 9, pageSize: 8192, into: &buffer) { _ throws(Refused) -> UInt64? in throw Refused() }
        }
        #expect(Array(buffer.readableBytesView) == before)
        // And a frame written after them decodes as the page.
        #expect(Wire.writePageFrame(requestId: 9, pageSize: 8192, into: &buffer) { out -> UInt64? in
            out.initializeMemory(as: UInt8.self, repeating: 0xAB)
            return 42
        })
        buffer.moveReaderIndex(forwardBy: before.count + 4)
        let response = try Wire.decodeResponse(Array(buffer.readableBytesView))
        #expect(response == Wire.Response(requestId: 9, body: .getPage(Wire.GetPageResponse(page: [UInt8](repeating: 0xAB, count: 8192), lsn: 42))))
    }
}
