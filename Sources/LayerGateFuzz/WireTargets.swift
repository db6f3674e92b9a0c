import LayerGateWire
import NIOCore

enum WireTargets {
    /// The server's default limit on sub-messages per request.
    static let maxMessages = 262_144

    static func request(_ bytes: UnsafeRawBufferPointer) {
        let decoded = Wire.decodeCheckedRequest(bytes, maxMessages: maxMessages)
        // The server's path for a token it has seen on the connection gives the same answer:
        // with this request's own token, and with another one.
        var known = ["eyJhbGciOiJFZERTQSJ9.e30.c2ln"]
        if case .success(let r) = decoded, !r.authToken.isEmpty { known.append(r.authToken) }
        for token in known {
            let fast = Wire.decodeCheckedRequest(bytes, maxMessages: maxMessages, knownToken: token)
            guard fast == decoded else {
                preconditionFailure("knowing the token \(token) changes the answer: \(fast), not \(decoded)")
            }
        }
        // Where the server reads a GetPage in place, it reads what the decoder does.
        for token in [nil] + known.map(Optional.some) {
            for limit in [maxMessages, 3] {
                guard let inPlace = Wire.readGetPageInPlace(bytes, knownToken: token, maxMessages: limit) else { continue }
                let general = Wire.decodeCheckedRequest(bytes, maxMessages: limit)
                guard case .success(let r) = general, r == inPlace.request(authToken: token ?? "") else {
                    preconditionFailure("read in place as \(inPlace) with token \(token ?? "none"), decoded as \(general)")
                }
            }
        }
        // Where the server reads a put in place, it reads what the decoder does.
        for token in [nil] + known.map(Optional.some) {
            for limit in [maxMessages, 4] {
                guard let inPlace = Wire.readPutRecordsInPlace(bytes, knownToken: token, maxMessages: limit) else { continue }
                let general = Wire.decodeCheckedRequest(bytes, maxMessages: limit)
                guard case .success(let r) = general, r == inPlace else {
                    preconditionFailure("put read in place as \(inPlace) knowing token \(token ?? "none"), decoded as \(general)")
                }
            }
        }
        guard case .success(let request) = decoded else { return }
        let again = Wire.encode(request)
        guard let decoded = try? Wire.decodeRequest(again), decoded == request else {
            preconditionFailure("a decoded request does not survive encode and decode: \(request)")
        }
        // The clients write a GetPage's frame themselves: byte for byte protobuf-c's.
        if case .getPage? = request.body {
            var written = ByteBufferAllocator().buffer(capacity: 0)
            Wire.writeFrame(request, into: &written)
            guard Array(written.readableBytesView) == Wire.frame(again) else {
                preconditionFailure("a GetPage request written as \(Array(written.readableBytesView)), packed by protobuf-c as \(again)")
            }
        }
    }

    static func response(_ bytes: UnsafeRawBufferPointer) {
        let general = Result { () throws(Wire.DecodeError) in try Wire.decodeResponseWithProtobufC(bytes) }
        if let inPlace = Wire.readGetPageAnswerInPlace(bytes) {
            guard case .success(let r) = general, r == inPlace else {
                preconditionFailure("a GetPage answer read in place is not what protobuf-c reads: \(inPlace) against \(general)")
            }
        }
        guard let response = try? Wire.decodeResponse(bytes) else { return }
        let again = Wire.encode(response)
        guard let decoded = try? Wire.decodeResponse(again), decoded == response else {
            preconditionFailure("a decoded response does not survive encode and decode: \(response)")
        }
    }
}
