import LayerGateWire

/// What a call to the server can fail with, from either client.
public enum ClientError: Error, Equatable, CustomStringConvertible {
    /// The server answered with an `Error`: its code and message.
    case server(code: Wire.ErrorCode, message: String)
    /// The connection closed before the answer came.
    case connectionClosed
    /// The answer's body was not the kind the request asks for, or the bytes were not a response.
    case unexpectedResponse(String)
    /// The socket failed: what was being done and the system's reason. The connection is closed.
    case transport(String)
    /// No byte came from the server for the connection's timeout. The connection is
    /// closed: the answers may still be on their way, and a new call must not read them.
    case timedOut(milliseconds: Int)
    /// The async call's task was cancelled before the answer came (or before
    /// it was sent). A request already sent may still be carried out by the
    /// server; its answer is dropped. The connection stays open, but a
    /// request the server holds (a GetPage waiting for its LSN) still counts
    /// among the requests it runs at once for the connection until answered.
    case cancelled

    public var description: String {
        switch self {
        case .server(let code, let message): return "\(code.name): \(message)"
        case .connectionClosed: return "the connection to layergated closed"
        case .unexpectedResponse(let s): return "unexpected response: \(s)"
        case .transport(let s): return s
        case .timedOut(let ms):
            return "no answer from layergated within \(ms) ms; the connection is closed (a request already sent may still complete on the server)"
        case .cancelled:
            return "the call was cancelled before its answer came (a request already sent may still complete on the server)"
        }
    }
}

extension ClientError {
    /// An answer under an id no call waits for: a call must never wait for
    /// ever for an answer that came under another id.
    static func notWaiting(_ requestId: UInt64) -> ClientError {
        .unexpectedResponse("an answer to request \(requestId), which is not waiting")
    }

    /// A GetPage answer whose page is not 8 KiB (the contract's page size).
    static func pageSize(_ bytes: Int) -> ClientError {
        .unexpectedResponse("a GetPage answer of \(bytes) bytes, where a page is \(Wire.pageBytes)")
    }
}
