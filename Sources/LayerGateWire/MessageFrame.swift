import CLayerGateProto
import NIOCore

extension Wire {
    /// Appends `response` as a whole frame (4-byte big-endian length, then the
    /// packed message) to `buffer`, packing straight into its storage: the
    /// server's write path makes no intermediate array.
    public static func writeFrame(_ response: Response, into buffer: inout ByteBuffer) {
        withCResponse(response) { m in
            appendFrame(size: layergate__v1__response__get_packed_size(m), into: &buffer) { layergate__v1__response__pack(m, $0) }
        }
    }

    /// Appends `request` as a whole frame to `buffer`, the same way: a client
    /// queues many requests in one buffer and writes them with one call.
    public static func writeFrame(_ request: Request, into buffer: inout ByteBuffer) {
        if case .getPage(let get)? = request.body {
            return writeGetPageRequestFrame(requestId: request.requestId, authToken: request.authToken, get, into: &buffer)
        }
        withCRequest(request) { m in
            appendFrame(size: layergate__v1__request__get_packed_size(m), into: &buffer) { layergate__v1__request__pack(m, $0) }
        }
    }

    /// The length prefix, then `pack` writes the message's `size` bytes into the buffer's own storage.
    private static func appendFrame(size: Int, into buffer: inout ByteBuffer, _ pack: (UnsafeMutablePointer<UInt8>?) -> Int) {
        buffer.writeInteger(UInt32(truncatingIfNeeded: size), endianness: .big)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in pack(out.baseAddress?.assumingMemoryBound(to: UInt8.self)) }
    }
}
