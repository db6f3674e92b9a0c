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

    /// Takes every whole frame out of the input, in the order they came. A
    /// GetPage answer's page is handed on where it lies, a view of the input:
    /// `body` must not keep the `Answer` (kept, it would hold the input's
    /// storage, and the next read would copy all of it). Any other answer decoded.
    mutating func take(_ body: (Answer) throws(ClientError) -> Void) throws(ClientError) {
        while let length = input.getInteger(at: input.readerIndex, endianness: .big, as: UInt32.self) {
            let n = Int(length)
            guard n <= maxFrameBytes else {
                throw .unexpectedResponse("a frame of \(n) bytes, above this connection's limit of \(maxFrameBytes)")
            }
            guard input.readableBytes >= 4 + n else { break }
            let frame = input.readerIndex + 4
            let read = input.withUnsafeReadableBytes { b in
                let raw = UnsafeRawBufferPointer(rebasing: b[4..<(4 + n)])
                if let page = Wire.GetPageAnswerFields(raw) { return Result<Read, Wire.DecodeError>.success(.page(page)) }
                return Result { () throws(Wire.DecodeError) in .decoded(try Wire.decodeResponseWithProtobufC(raw)) }
            }
            let answer: Answer
            switch read {
            case .success(.page(let fields)):
                guard let page = input.getSlice(at: frame + fields.page.lowerBound, length: fields.page.count) else {
                    throw .unexpectedResponse("a GetPage answer whose page lies outside its frame")
                }
                answer = Answer(requestId: fields.requestId, content: .page(page, lsn: fields.lsn))
            case .success(.decoded(let response)):
                // The server refused the connection's bytes (or the connection) and is closing it.
                if response.requestId == 0, case .error(let e)? = response.body { throw .server(code: e.code, message: e.message) }
                answer = Answer(requestId: response.requestId, content: .decoded(response))
            case .failure(let e):
                throw .unexpectedResponse("a frame that is not a Response (\(e.message))")
            }
            input.moveReaderIndex(forwardBy: 4 + n)
            try body(answer)
        }
        if input.readableBytes == 0 {
            input.clear()
        } else if input.readerIndex > Self.readChunk {
            input.discardReadBytes()
        }
    }

    private enum Read {
        case page(Wire.GetPageAnswerFields)
        case decoded(Wire.Response)
    }

    /// Nothing more will be read: lets go of what was.
    mutating func clear() { input.clear() }
}
