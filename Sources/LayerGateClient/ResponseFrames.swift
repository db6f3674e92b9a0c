import LayerGateWire
import NIOCore

/// The bytes a connection has read from the server, and the whole Response
/// frames in them: the one frame reader of both clients.
struct ResponseFrames {
    private(set) var input = ByteBufferAllocator().buffer(capacity: ResponseFrames.readChunk)
    let maxFrameBytes: Int

    /// The most one read asks the socket for.
    static let readChunk = 256 << 10

    init(maxFrameBytes: Int) { self.maxFrameBytes = maxFrameBytes }

    /// Reads what `socket` has, up to `readChunk` bytes, onto the end of the input.
    mutating func read(from socket: UnixSocket, waiting: Bool) throws(ClientError) -> UnixSocket.ReadOutcome {
        try socket.read(into: &input, maximum: Self.readChunk, waiting: waiting)
    }

    /// Takes every whole frame out of the input, decoded, in the order they came.
    mutating func take(_ body: (Wire.Response) throws(ClientError) -> Void) throws(ClientError) {
        while let length = input.getInteger(at: input.readerIndex, endianness: .big, as: UInt32.self) {
            let n = Int(length)
            guard n <= maxFrameBytes else {
                throw .unexpectedResponse("a frame of \(n) bytes, above this connection's limit of \(maxFrameBytes)")
            }
            guard input.readableBytes >= 4 + n else { break }
            let decoded = input.withUnsafeReadableBytes { b in
                Result { () throws(Wire.DecodeError) in try Wire.decodeResponse(UnsafeRawBufferPointer(rebasing: b[4..<(4 + n)])) }
            }
            input.moveReaderIndex(forwardBy: 4 + n)
            switch decoded {
            case .success(let response):
                // The server refused the connection's bytes (or the connection) and is closing it.
                if response.requestId == 0, case .error(let e)? = response.body { throw .server(code: e.code, message: e.message) }
                try body(response)
            case .failure(let e): throw .unexpectedResponse("a frame that is not a Response (\(e.message))")
            }
        }
        if input.readableBytes == 0 {
            input.clear()
        } else if input.readerIndex > Self.readChunk {
            input.discardReadBytes()
        }
    }

    /// Nothing more will be read: lets go of what was.
    mutating func clear() { input.clear() }
}

extension ClientError {
    /// An answer under an id no call waits for: a call must never wait for
    /// ever for an answer that came under another id.
    static func notWaiting(_ requestId: UInt64) -> ClientError {
        .unexpectedResponse("an answer to request \(requestId), which is not waiting")
    }
}
