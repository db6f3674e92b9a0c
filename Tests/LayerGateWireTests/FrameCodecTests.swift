import NIOCore
import NIOEmbedded
import Testing

@testable import LayerGateWire

func decoderChannel(max: Int = 64) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: max)))
    return channel
}

func frames(_ channel: EmbeddedChannel) throws -> [[UInt8]] {
    var out: [[UInt8]] = []
    while let b = try channel.readInbound(as: ByteBuffer.self) { out.append(Array(b.readableBytesView)) }
    return out
}

@Suite("Frame codec (EmbeddedChannel)")
struct FrameCodecTests {
    @Test func tornFramesArriveWhole() throws {
        let ch = try decoderChannel()
        let bytes = Wire.frame([1, 2, 3, 4, 5]) + Wire.frame([9])
        for b in bytes { try ch.writeInbound(ByteBuffer(bytes: [b])) }
        #expect(try frames(ch) == [[1, 2, 3, 4, 5], [9]])
        #expect(try ch.finish().isClean)
    }

    @Test func manyFramesInOneRead() throws {
        let ch = try decoderChannel()
        let payloads: [[UInt8]] = (0..<20).map { Array(repeating: UInt8($0), count: $0) }
        try ch.writeInbound(ByteBuffer(bytes: payloads.flatMap { Wire.frame($0) }))
        #expect(try frames(ch) == payloads)
    }

    @Test func aFrameOfExactlyTheMaximumIsAllowed() throws {
        let ch = try decoderChannel(max: 64)
        try ch.writeInbound(ByteBuffer(bytes: Wire.frame(Array(repeating: 7, count: 64))))
        #expect(try frames(ch).map(\.count) == [64])
    }

    @Test func anOversizeLengthFailsBeforeItsBytesArrive() throws {
        let ch = try decoderChannel(max: 64)
        // Only the length: the decoder must not wait for (or buffer) 65 bytes.
        #expect(throws: FrameError.frameTooLarge(length: 65, max: 64)) {
            try ch.writeInbound(ByteBuffer(bytes: [0, 0, 0, 65]))
        }
        _ = try? ch.finish()
    }

    @Test func aHugeLengthIsRejectedToo() throws {
        let ch = try decoderChannel(max: defaultMaxFrameBytes)
        #expect(throws: FrameError.frameTooLarge(length: Int(UInt32.max), max: defaultMaxFrameBytes)) {
            try ch.writeInbound(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF]))
        }
        _ = try? ch.finish()
    }

    @Test func aTornFrameAtEndOfStreamIsDropped() throws {
        let ch = try decoderChannel()
        try ch.writeInbound(ByteBuffer(bytes: Wire.frame([1, 2]) + [0, 0, 0, 9, 1, 2]))
        #expect(try frames(ch) == [[1, 2]])
        _ = try ch.finish(acceptAlreadyClosed: true)
    }

    /// Requests and responses packed straight into a buffer are byte for byte
    /// the length prefix and the message `encode` packs.
    @Test func writeFrameIsTheLengthThenTheEncodedMessage() throws {
        let request = Wire.Request(requestId: 300, authToken: "t", body: .getPage(
            Wire.GetPageRequest(tenantId: "0123456789abcdef0123456789abcdef", key: Wire.PageKey(spcOid: 1, dbOid: 2, relNumber: 3, fork: 0, block: 4),
                                latest: true, waitMs: 7)))
        let response = Wire.Response(requestId: 300, body: .error(Wire.Error(code: .pageNotFound, message: "no page")))
        var buffer = ByteBuffer()
        Wire.writeFrame(request, into: &buffer)
        Wire.writeFrame(response, into: &buffer)
        #expect(Array(buffer.readableBytesView) == Wire.frame(Wire.encode(request)) + Wire.frame(Wire.encode(response)))
    }
}
