extension Wire {
    /// Where a GetPage answer's fields lie in its frame, read without copying
    /// anything: the clients' path for pages. A client copies the page once,
    /// into an array of its own or into its caller's memory, where protobuf-c
    /// copies it into its own message first and frees that after.
    ///
    /// Only the plain form is read this way: a request id and a GetPage body,
    /// each at most once, and in the body a page and an LSN, each at most
    /// once. Anything else goes to protobuf-c (`decodeResponse` does both),
    /// so where this reads a frame it reads what protobuf-c does (the fuzz
    /// target `response` checks that on every input).
    public struct GetPageAnswerFields: Sendable, Equatable {
        public var requestId: UInt64
        public var lsn: UInt64
        /// The page's bytes, as offsets into the frame; empty when the answer has no page.
        public var page: Range<Int>

        public init?(_ raw: UnsafeRawBufferPointer) {
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
            self.requestId = requestId ?? 0
            self.lsn = lsn ?? 0
            if let page, let start = page.baseAddress, let frame = raw.baseAddress {
                let offset = frame.distance(to: start)
                self.page = offset..<(offset + page.count)
            } else {
                self.page = 0..<0
            }
        }
    }

    /// A GetPage answer in its plain form (`GetPageAnswerFields`) as a
    /// Response, its page copied once; nil for any other frame.
    public static func readGetPageAnswerInPlace(_ raw: UnsafeRawBufferPointer) -> Response? {
        guard let fields = GetPageAnswerFields(raw) else { return nil }
        return Response(requestId: fields.requestId,
                        body: .getPage(GetPageResponse(page: [UInt8](UnsafeRawBufferPointer(rebasing: raw[fields.page])),
                                                       lsn: fields.lsn)))
    }
}
