import Testing

@testable import LayerGateWire

@Suite("GetPage read in place")
struct InPlaceGetPageTests {
    static let tenant = "0123456789abcdef0123456789ABCDEF"
    static let token = "eyJhbGciOiJFZERTQSJ9.e30.c2ln"
    static let key = Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1 << 31, fork: 0, block: UInt32.max)

    static func getPage(id: UInt64 = 7, token: String = "", tenant: String = tenant, lsn: UInt64 = 1 << 40,
                        latest: Bool = false, waitMs: UInt32 = 250) -> [UInt8] {
        Wire.encode(Wire.Request(requestId: id, authToken: token,
                                 body: .getPage(Wire.GetPageRequest(tenantId: tenant, key: key, lsn: lsn, latest: latest, waitMs: waitMs))))
    }

    static func inPlace(_ bytes: [UInt8], known: String? = nil, maxMessages: Int = 1000) -> Wire.InPlaceGetPage? {
        bytes.withUnsafeBytes { Wire.readGetPageInPlace($0, knownToken: known, maxMessages: maxMessages) }
    }

    /// Every request read in place is the one the decoder makes.
    static func expectSameAsDecoder(_ bytes: [UInt8], known: String?, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let g = try #require(inPlace(bytes, known: known), sourceLocation: sourceLocation)
        let decoded = bytes.withUnsafeBytes { Wire.decodeCheckedRequest($0, maxMessages: 1000) }
        #expect(decoded == .success(g.request(authToken: known ?? "")), sourceLocation: sourceLocation)
    }

    @Test func plainRequestsAreReadAsTheDecoderReadsThem() throws {
        try Self.expectSameAsDecoder(Self.getPage(), known: nil)
        try Self.expectSameAsDecoder(Self.getPage(token: Self.token), known: Self.token)
        try Self.expectSameAsDecoder(Self.getPage(id: 0, lsn: 0, latest: true, waitMs: 0), known: nil)
        try Self.expectSameAsDecoder(Self.getPage(id: .max, lsn: .max, waitMs: .max), known: nil)
        let g = try #require(Self.inPlace(Self.getPage()))
        #expect(g.tenantHigh == 0x0123_4567_89ab_cdef && g.tenantLow == 0x0123_4567_89ab_cdef)
        #expect(g.tenantId == Self.tenant, "as sent, case and all")
    }

    /// The word-at-a-time hex decode agrees with a digit-at-a-time one for
    /// every byte value at every position of a word.
    @Test func hexWordsAreReadAsDigitByDigit() {
        func reference(_ bytes: [UInt8]) -> UInt32? {
            var v: UInt32 = 0
            for c in bytes {
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x61...0x66: d = c - 0x61 + 10
                case 0x41...0x46: d = c - 0x41 + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
            }
            return v
        }
        let bases: [[UInt8]] = [Array("0123abcd".utf8), Array("89ABCDEF".utf8), Array("fFfF0909".utf8)]
        var checked = 0
        for base in bases {
            for position in 0..<8 {
                for c in 0...255 {
                    var bytes = base
                    bytes[position] = UInt8(c)
                    let word = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                    #expect(Wire.hexWord(word) == reference(bytes), "\(bytes)")
                    checked += 1
                }
            }
        }
        #expect(checked == 3 * 8 * 256)
    }

    @Test func aTokenMustBeTheKnownOne() {
        #expect(Self.inPlace(Self.getPage(token: Self.token), known: nil) == nil, "a token not yet known")
        #expect(Self.inPlace(Self.getPage(token: Self.token + "x"), known: Self.token) == nil, "another token")
        #expect(Self.inPlace(Self.getPage(), known: Self.token) == nil, "none while one is known")
        #expect(Self.inPlace(Self.getPage(token: Self.token), known: Self.token, maxMessages: 3) == nil, "past the message limit")
        #expect(Self.inPlace(Self.getPage(), known: nil, maxMessages: 3) != nil)
    }

    /// What protobuf-c would merge, truncate or refuse is left to the decoder.
    @Test func anythingButThePlainFormIsLeftToTheDecoder() throws {
        let plain = Self.getPage()
        #expect(Self.inPlace(Self.getPage(tenant: "0123456789abcdef0123456789abcdeg")) == nil, "not hex")
        #expect(Self.inPlace(Self.getPage(tenant: "0123456789abcdef0123456789abcde\u{0}")) == nil, "a NUL")
        #expect(Self.inPlace(Self.getPage(tenant: "0123456789abcdef")) == nil, "too short")
        #expect(Self.inPlace(plain + [0x08, 0x09]) == nil, "request_id twice")
        #expect(Self.inPlace(plain + [0x18, 0x01]) == nil, "an unknown field")
        #expect(Self.inPlace(plain + [0x52, 0x00]) == nil, "get_page twice (protobuf-c merges)")
        #expect(Self.inPlace(Array(plain.dropLast())) == nil, "cut short")
        // A GetPage body with its own unknown field, a repeated field, a fixed64 lsn, a huge wait.
        func body(_ extra: [UInt8]) -> [UInt8] {
            var b: [UInt8] = [0x0A, 32] + Array(Self.tenant.utf8) + [0x12, 0x02, 0x28, 0x01] + extra
            b = [0x52, UInt8(b.count)] + b
            return [0x08, 0x01] + b
        }
        try Self.expectSameAsDecoder(body([]), known: nil)
        #expect(Self.inPlace(body([0x30, 0x01])) == nil, "unknown field 6")
        #expect(Self.inPlace(body([0x18, 0x01, 0x18, 0x02])) == nil, "lsn twice")
        #expect(Self.inPlace(body([0x19, 1, 0, 0, 0, 0, 0, 0, 0])) == nil, "lsn as fixed64")
        #expect(Self.inPlace(body([0x28, 0x80, 0x80, 0x80, 0x80, 0x10])) == nil, "wait_ms past 32 bits")
        #expect(Self.inPlace(body([0x18] + [UInt8](repeating: 0xFF, count: 9) + [0x02])) == nil, "lsn past 64 bits")
        try Self.expectSameAsDecoder(body([0x20, 0x80, 0x00]), known: nil)  // a padded bool is still a bool
        try Self.expectSameAsDecoder(body([0x20, 0x80, 0x01]), known: nil)
        // No key at all.
        var noKey: [UInt8] = [0x0A, 32] + Array(Self.tenant.utf8)
        noKey = [0x08, 0x01, 0x52, UInt8(noKey.count)] + noKey
        #expect(Self.inPlace(noKey) == nil)
    }
}
