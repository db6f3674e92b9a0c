import LayerGateWire
import NIOCore

/// One answer from the server, as the frame reader hands it on. A GetPage
/// answer stays where it lies in the input, and whoever takes it copies its
/// page once: into a `GetPageResponse` of its own (`outcome`), or into the
/// caller's memory (`copyPage`). Any other answer comes decoded.
struct Answer {
    let requestId: UInt64
    let content: Content

    enum Content {
        /// The page's bytes: a view of the input, not a copy.
        case page(ByteBuffer, lsn: UInt64)
        case decoded(Wire.Response)
    }

    /// The answer's body, or the server's error as `ClientError.server`.
    func outcome() -> Result<Wire.Response.Body, ClientError> {
        switch content {
        case .page(let page, let lsn): return .success(.getPage(Wire.GetPageResponse(page: Array(page.readableBytesView), lsn: lsn)))
        case .decoded(let response): return response.outcome()
        }
    }

    /// Sizes `bytes` to hold `count` pages, keeping its storage.
    static func fit(_ bytes: inout [UInt8], pages count: Int) {
        let wanted = count * Wire.pageBytes
        if bytes.count > wanted {
            bytes.removeLast(bytes.count - wanted)
        } else if bytes.count < wanted {
            bytes.append(contentsOf: repeatElement(0, count: wanted - bytes.count))
        }
    }

    /// Copies the answer's page into `pages` at `offset` and returns the LSN it
    /// was read at; anything but an 8 KiB page is a failure, and writes nothing.
    func copyPage(into pages: inout [UInt8], at offset: Int) -> Result<UInt64, ClientError> {
        switch content {
        case .page(let page, let lsn):
            guard page.readableBytes == Wire.pageBytes else { return .failure(.pageSize(page.readableBytes)) }
            page.withUnsafeReadableBytes { source in
                pages.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[offset..<(offset + Wire.pageBytes)]).copyMemory(from: source) }
            }
            return .success(lsn)
        case .decoded(let response):
            return response.outcome().checked { body throws(ClientError) in try body.getPage() }.map { answer in
                pages.replaceSubrange(offset..<(offset + Wire.pageBytes), with: answer.page)
                return answer.lsn
            }
        }
    }
}
