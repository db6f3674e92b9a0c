/// Why a request frame was refused before anything was built from it; every
/// such refusal is INVALID_ARGUMENT for the request id (0 when unknown).
public struct RequestRejection: Error, Sendable, Equatable {
    public var requestId: UInt64
    public var message: String
}

extension Wire {
    /// How the server decodes a request frame it did not make: the shape
    /// check (sub-message count, clean strings), then protobuf-c. The fuzz
    /// target `request` runs this same function.
    public static func decodeCheckedRequest(_ raw: UnsafeRawBufferPointer, maxMessages: Int,
                                            knownToken: String? = nil, arena: DecodeArena? = nil) -> Result<Request, RequestRejection> {
        let shape = MessageShape.ofRequest(raw, maxMessages: maxMessages)
        if shape.tooManyMessages {
            return .failure(RequestRejection(
                requestId: 0, message: "the request holds more than \(maxMessages) records, patches, strings and other fields that each take memory to decode; split it"))
        }
        guard let request = try? decodeRequest(raw, knownToken: knownToken, arena: arena) else {
            return .failure(RequestRejection(requestId: 0, message: "frame does not decode as a layergate.v1.Request"))
        }
        if let field = shape.badString {
            return .failure(RequestRejection(requestId: request.requestId, message: "\(field) is not valid UTF-8, or holds a NUL byte"))
        }
        return .success(request)
    }
}
