extension Wire {
    /// A GetPage answer read where it lies in the frame: the page is copied
    /// once, into the answer's array, where protobuf-c copies it into its own
    /// message first and frees that after. The clients' path for pages.
    ///
    /// Only the plain form is read this way: a request id and a GetPage body,
    /// each at most once, and in the body a page and an LSN, each at most
    /// once. Anything else goes to protobuf-c (`decodeResponse` does both),
    /// so where this reads a frame it reads what protobuf-c does (the fuzz
    /// target `response` checks that on every input).
    public static func readGetPageAnswerInPlace(_ raw: UnsafeRawBufferPointer) -> Response? {
        var requestId: UInt64?
        var body: UnsafeRawBufferPointer?
        let plain = PlainFields.read(raw) { field in
            switch field {
            case .varint(1, let v) where requestId == nil: requestId = v
            case .bytes(10, let b) where body == nil: body = b
            default: return false
            }
            return true
        }
        guard plain, let body else { return nil }
        var page: UnsafeRawBufferPointer?
        var lsn: UInt64?
        let plainBody = PlainFields.read(body) { field in
            switch field {
            case .bytes(1, let p) where page == nil: page = p
            case .varint(2, let v) where lsn == nil: lsn = v
            default: return false
            }
            return true
        }
        guard plainBody else { return nil }
        return Response(requestId: requestId ?? 0,
                        body: .getPage(GetPageResponse(page: page.map { [UInt8]($0) } ?? [], lsn: lsn ?? 0)))
    }
}
