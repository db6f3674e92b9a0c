extension Wire {
    /// A GetPage request read where it lies in the frame: no protobuf-c, no
    /// String, nothing allocated. The server's path for cache hits.
    ///
    /// Only the plain form is read this way: each field at most once, with the
    /// wire type and range its type has, a tenant id of 32 hex digits, a key,
    /// and the connection's known token or none. Anything else (which is
    /// where protobuf-c's merging, truncation and error rules would matter)
    /// is left to `decodeCheckedRequest`, which then answers as always. Where
    /// this reads a frame, it reads what `decodeCheckedRequest` does (the fuzz
    /// target `request` checks that on every input).
    public struct InPlaceGetPage: Sendable, Equatable {
        public var requestId: UInt64
        /// The tenant id's 32 hex digits as sent (either case), eight ASCII bytes a word.
        var tenantText: SIMD4<UInt64>
        public var tenantHigh: UInt64
        public var tenantLow: UInt64
        public var key: PageKey
        public var lsn: UInt64
        public var latest: Bool
        public var waitMs: UInt32

        /// The tenant id as sent (allocates: for the paths that are not a cache hit).
        public var tenantId: String {
            withUnsafeBytes(of: tenantText) { String(decoding: $0, as: UTF8.self) }
        }

        /// The request as `decodeCheckedRequest` gives it.
        public func request(authToken: String) -> Request {
            Request(requestId: requestId, authToken: authToken,
                    body: .getPage(GetPageRequest(tenantId: tenantId, key: key, lsn: lsn, latest: latest, waitMs: waitMs)))
        }
    }

    /// Reads `raw` as a plain GetPage request; nil for anything else (decode
    /// it with `decodeCheckedRequest`). `knownToken`: the token this
    /// connection's requests carry; a request with another token, or with
    /// none while one is known, is not read here.
    public static func readGetPageInPlace(_ raw: UnsafeRawBufferPointer, knownToken: String?, maxMessages: Int) -> InPlaceGetPage? {
        guard let request = PlainRequest.read(raw, bodyField: 10), var page = readGetPageBody(request.body) else { return nil }
        // Allocations protobuf-c makes for it: the body, the tenant id, the key, the token.
        guard maxMessages >= (request.token == nil ? 3 : 4) else { return nil }
        switch (request.token, knownToken) {
        case (nil, nil): break
        case (let t?, let known?): guard PlainRequest.isKnown(t, known) else { return nil }
        default: return nil
        }
        page.requestId = request.requestId
        return page
    }

    private static func readGetPageBody(_ b: UnsafeRawBufferPointer) -> InPlaceGetPage? {
        var tenant: UnsafeRawBufferPointer?
        var keyBytes: UnsafeRawBufferPointer?
        var lsn: UInt64?, latest: UInt64?, waitMs: UInt64?
        let plain = PlainFields.read(b) { field in
            switch field {
            case .bytes(1, let t) where tenant == nil: tenant = t
            case .bytes(2, let k) where keyBytes == nil: keyBytes = k
            case .varint(3, let v) where lsn == nil: lsn = v
            case .varint(4, let v) where latest == nil: latest = v
            case .varint(5, let v) where waitMs == nil && v <= UInt64(UInt32.max): waitMs = v
            default: return false
            }
            return true
        }
        guard plain, let tenant, tenant.count == 32, let keyBytes, let key = readPageKey(keyBytes) else { return nil }
        var text = SIMD4<UInt64>()
        withUnsafeMutableBytes(of: &text) { $0.copyMemory(from: tenant) }
        guard let w0 = hexWord(text[0]), let w1 = hexWord(text[1]), let w2 = hexWord(text[2]), let w3 = hexWord(text[3]) else {
            return nil
        }
        let (high, low) = (UInt64(w0) << 32 | UInt64(w1), UInt64(w2) << 32 | UInt64(w3))
        return InPlaceGetPage(requestId: 0, tenantText: text, tenantHigh: high, tenantLow: low, key: key, lsn: lsn ?? 0,
                              latest: (latest ?? 0) != 0, waitMs: UInt32(waitMs ?? 0))
    }

    static func readPageKey(_ b: UnsafeRawBufferPointer) -> PageKey? {
        var values = SIMD8<UInt32>()  // fields 1...5, all uint32
        var seen: UInt8 = 0
        let plain = PlainFields.read(b) { field in
            guard case .varint(let number, let v) = field, (1...5).contains(number), seen & (1 << number) == 0,
                  v <= UInt64(UInt32.max)
            else { return false }
            seen |= 1 << number
            values[Int(number) - 1] = UInt32(v)
            return true
        }
        guard plain else { return nil }
        return PageKey(spcOid: values[0], dbOid: values[1], relNumber: values[2], fork: values[3], block: values[4])
    }

    /// Eight hex digits (either case), as the bytes of `chars` in memory
    /// order, to their value; nil if any is not a hex digit. Eight at a time
    /// in one word: a digit at a time was most of this decode's CPU.
    static func hexWord(_ chars: UInt64) -> UInt32? {
        let x = UInt64(littleEndian: chars)  // the first digit in the lowest byte
        let ones: UInt64 = 0x0101_0101_0101_0101
        let high: UInt64 = 0x8080_8080_8080_8080
        guard x & high == 0 else { return nil }  // ASCII only: the range checks below cannot carry
        // A byte's top bit: set if the byte is at least lo, or (second add) more than hi.
        func inRange(_ v: UInt64, _ lo: UInt8, _ hi: UInt8) -> UInt64 {
            (v &+ (0x80 - UInt64(lo)) &* ones) & ~(v &+ (0x7F - UInt64(hi)) &* ones) & high
        }
        let digits = inRange(x, 0x30, 0x39)  // '0'...'9'
        let letters = inRange(x | (0x20 &* ones), 0x61, 0x66)  // 'a'...'f', either case
        guard digits | letters == high else { return nil }
        // '0'...'9' have bit 6 clear and their value in the low nibble; letters have it set and value - 9 there.
        let nibbles = (x & (0x0F &* ones)) &+ ((x >> 6) & ones) &* 9
        let pairs = (nibbles << 4 | nibbles >> 8) & 0x00FF_00FF_00FF_00FF  // bytes 0, 2, 4, 6: two digits each
        let packed = (pairs | pairs >> 8) & 0x0000_FFFF_0000_FFFF
        return UInt32(truncatingIfNeeded: packed | packed >> 16).byteSwapped  // the first digit most significant
    }
}
