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
    ///
    /// `knownToken`: the token of an earlier request this function accepted
    /// from the same peer. When this request carries the same bytes where
    /// encoders put it, the rest is checked and decoded without it and the
    /// result carries `knownToken` itself: no token bytes are checked, copied
    /// or compared twice on a server where every request has one. The answer
    /// is the same as without it (the fuzz target `request` checks that).
    public static func decodeCheckedRequest(_ raw: UnsafeRawBufferPointer, maxMessages: Int,
                                            knownToken: String? = nil, arena: DecodeArena? = nil) -> Result<Request, RequestRejection> {
        if var known = knownToken, let (requestId, rest) = known.withUTF8({ MessageShape.afterToken($0, in: raw) }),
           case .success(var request) = decodeChecked(rest, maxMessages: maxMessages - 1, knownToken: nil, arena: arena) {
            request.requestId = requestId
            request.authToken = known
            return .success(request)
        }
        return decodeChecked(raw, maxMessages: maxMessages, knownToken: knownToken, arena: arena)
    }

    private static func decodeChecked(_ raw: UnsafeRawBufferPointer, maxMessages: Int,
                                      knownToken: String?, arena: DecodeArena?) -> Result<Request, RequestRejection> {
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
