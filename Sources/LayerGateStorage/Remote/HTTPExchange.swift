import CHTTP

/// One HTTP request and its answer, through libcurl (`CHTTP`); the only
/// Swift code that sees that shim's pointers.
struct HTTPExchange {
    enum Body {
        case none
        case bytes([UInt8])
        /// `length` bytes of an open file, from `offset`.
        case file(fd: Int32, offset: Int, length: Int)
    }

    struct Answer {
        var status: Int
        /// The body of an answer that did not go to `into` (at most `maxBody` bytes).
        var body: [UInt8]
        var metaCrc32c: UInt32?
        var contentLength: Int?

        var text: String { String(decoding: body.prefix(300), as: UTF8.self) }
    }

    struct Signing {
        /// "aws:amz:REGION:s3"
        var sigv4: String
        /// "ACCESS:SECRET"
        var userpwd: String
    }

    private static let initialized: Bool = lg_http_global_init() == 0

    /// Performs the request; throws the transport's failure (no answer at all).
    static func perform(_ method: String, _ url: String, signing: Signing?, headers: [String], body: Body = .none,
                        into fd: Int32 = -1, maxBody: Int = 1 << 20, timeoutMs: Int = 300_000)
        throws(RemoteError) -> Answer
    {
        guard initialized else { throw .unavailable(operation: method, key: url, reason: "libcurl did not initialize") }
        var result = lg_http_result()
        defer { lg_http_result_free(&result) }
        let lines = headers.joined(separator: "\n")
        let rc: Int32
        switch body {
        case .none:
            rc = lg_http_perform(method, url, signing?.sigv4, signing?.userpwd, lines, -1, 0, 0, nil, 0, fd, maxBody,
                                 timeoutMs, 10_000, &result)
        case .bytes(let bytes):
            rc = lg_http_perform(method, url, signing?.sigv4, signing?.userpwd, lines, -1, 0, 0, bytes, bytes.count, fd,
                                 maxBody, timeoutMs, 10_000, &result)
        case .file(let source, let offset, let length):
            rc = lg_http_perform(method, url, signing?.sigv4, signing?.userpwd, lines, source, Int64(offset), Int64(length),
                                 nil, 0, fd, maxBody, timeoutMs, 10_000, &result)
        }
        guard rc == 0 else {
            let reason = withUnsafeBytes(of: result.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw .failed(method, url, reason, errno: result.os_errno == 0 ? nil : result.os_errno,
                          local: result.local_call != 0)
        }
        let bodyBytes = result.body.map { Array(UnsafeRawBufferPointer(start: $0, count: result.body_len)) } ?? []
        return Answer(status: result.status, body: bodyBytes,
                      metaCrc32c: result.has_meta_crc32c != 0 ? result.meta_crc32c : nil,
                      contentLength: result.content_length >= 0 ? Int(result.content_length) : nil)
    }
}
