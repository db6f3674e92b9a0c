import NIOCore

/// Errors of the framing layer.
public enum FrameError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A frame announced more bytes than the server accepts; the connection
    /// is answered FRAME_TOO_LARGE (request id 0) and closed.
    case frameTooLarge(length: Int, max: Int)

    public var description: String {
        switch self {
        case .frameTooLarge(let length, let max): return "frame of \(length) bytes is larger than the maximum of \(max)"
        }
    }
}

/// Default largest frame: 16 MiB. A frame of exactly this size is allowed.
public let defaultMaxFrameBytes = 16 << 20

/// Splits a byte stream into frames: a 4-byte big-endian length, then that
/// many bytes. Emits each frame's payload as a `ByteBuffer` slice.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = ByteBuffer

    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = defaultMaxFrameBytes) { self.maxFrameBytes = maxFrameBytes }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt32.self) else {
            return .needMoreData
        }
        // Checked before waiting for the bytes: a huge length must not make us buffer them.
        guard Int(length) <= maxFrameBytes else { throw FrameError.frameTooLarge(length: Int(length), max: maxFrameBytes) }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        // A torn frame at EOF is dropped: the peer went away mid-frame.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

extension Wire {
    /// A whole frame (length prefix + payload) as bytes, for clients without NIO.
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 4)
        let n = UInt32(payload.count)
        out += [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        out += payload
        return out
    }
}
