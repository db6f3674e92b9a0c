import LayerGateWire

enum WireTargets {
    /// The server's default limit on sub-messages per request.
    static let maxMessages = 262_144

    static func request(_ bytes: UnsafeRawBufferPointer) {
        guard case .success(let request) = Wire.decodeCheckedRequest(bytes, maxMessages: maxMessages) else { return }
        let again = Wire.encode(request)
        guard let decoded = try? Wire.decodeRequest(again), decoded == request else {
            preconditionFailure("a decoded request does not survive encode and decode: \(request)")
        }
    }

    static func response(_ bytes: UnsafeRawBufferPointer) {
        guard let response = try? Wire.decodeResponse(bytes) else { return }
        let again = Wire.encode(response)
        guard let decoded = try? Wire.decodeResponse(again), decoded == response else {
            preconditionFailure("a decoded response does not survive encode and decode: \(response)")
        }
    }
}
