import LayerGateWire
import Testing

/// What the server checks in a frame before protobuf-c builds anything from it.
@Suite("Message shape: strings, allocations, the token peek")
struct MessageShapeTests {
    static let tenant = Array("0123456789abcdef0123456789abcdef".utf8)

    func shape(_ bytes: [UInt8], max: Int = 1000) -> MessageShape {
        bytes.withUnsafeBytes { MessageShape.ofRequest($0, maxMessages: max) }
    }

    /// GetPageRequest{tenant_id} inside Request field 10, after `prefix`.
    func getPage(prefix: [UInt8] = [0x08, 0x01], tenant: [UInt8] = tenant, extra: [UInt8] = []) -> [UInt8] {
        let inner: [UInt8] = [0x0a, UInt8(tenant.count)] + tenant + extra
        return prefix + [0x52] + varint(inner.count) + inner
    }

    func varint(_ n: Int) -> [UInt8] {
        var v = UInt64(n), out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        return out + [UInt8(v)]
    }

    @Test func aNulOrInvalidUtf8InAStringIsNamed() {
        #expect(shape(getPage()).badString == nil)
        #expect(shape(getPage(tenant: Self.tenant + [0, 0x41])).badString == "tenant_id")
        #expect(shape(getPage(tenant: Self.tenant + [0xC3, 0x28])).badString == "tenant_id")
    }

    /// protobuf-c allocates for every unknown field and every occurrence of a
    /// string (even a singular one repeated): each counts toward the limit.
    @Test(arguments: ["unknown varints", "unknown bytes", "a repeated singular string", "empty records"])
    func whatProtobufCAllocatesForIsCounted(what: String) {
        let n = 2000
        let body: [UInt8]
        switch what {
        case "unknown varints": body = getPage(extra: Array([[UInt8]](repeating: [0x18 | 0x40, 0x00], count: n).joined()))
        case "unknown bytes": body = getPage(extra: Array([[UInt8]](repeating: [0x7a, 0x00], count: n).joined()))
        case "a repeated singular string": body = getPage(extra: Array([[UInt8]](repeating: [0x0a, 0x00], count: n).joined()))
        default:
            let inner: [UInt8] = [0x0a, 32] + Self.tenant + Array([[UInt8]](repeating: [0x12, 0x00], count: n).joined())
            body = [0x08, 0x01, 0x5a] + varint(inner.count) + inner
        }
        let s = shape(body)
        #expect(s.tooManyMessages, "\(what): \(s.messages) counted")
        #expect(!shape(getPage()).tooManyMessages)
    }

    /// The server reuses the last token's String when a request carries the same bytes.
    @Test func aKnownTokenIsReusedOnlyWhenTheBytesMatch() throws {
        let bytes = Wire.encode(Wire.Request(requestId: 1, authToken: "hdr.claims.sig", body: .listTenants(Wire.ListTenantsRequest())))
        for known in ["hdr.claims.sig", "hdr.claims.sIg", "hdr.claims.sig2", "hdr.claims.si", "", nil] as [String?] {
            let r = try bytes.withUnsafeBytes { try Wire.decodeRequest($0, knownToken: known) }
            #expect(r.authToken == "hdr.claims.sig", "known: \(String(describing: known))")
        }
        let none = Wire.encode(Wire.Request(requestId: 1, body: .listTenants(Wire.ListTenantsRequest())))
        #expect(try none.withUnsafeBytes { try Wire.decodeRequest($0, knownToken: "hdr.claims.sig") }.authToken == "")
    }

    /// With the connection's token known, the server decodes what follows the
    /// token; every frame below must get the answer a plain decode gives.
    @Test func aKnownTokenGivesTheSameAnswer() {
        let token = Array("hdr.claims.sig".utf8)
        let tokenField: [UInt8] = [0x12, UInt8(token.count)] + token
        let frames: [String: [UInt8]] = [
            "id, token, body": getPage(prefix: [0x08, 0x07] + tokenField),
            "token, body (id 0)": getPage(prefix: tokenField),
            "another token": getPage(prefix: [0x08, 0x07, 0x12, 3] + Array("abc".utf8)),
            "the id again after the body": getPage(prefix: [0x08, 0x07] + tokenField) + [0x08, 0x09],
            "the id set to 0 after the body": getPage(prefix: [0x08, 0x07] + tokenField) + [0x08, 0x00],
            "a second token after the body": getPage(prefix: [0x08, 0x07] + tokenField) + [0x12, 0x01, 0x41],
            "a NUL in the tenant": getPage(prefix: [0x08, 0x07] + tokenField, tenant: Self.tenant + [0]),
            "truncated body": Array(getPage(prefix: [0x08, 0x07] + tokenField).dropLast(3)),
            "token cut short": [0x08, 0x07, 0x12, UInt8(token.count)] + token.prefix(5),
            "nothing after the token": [0x08, 0x07] + tokenField,
            // protobuf-c reads keys and lengths of at most 5 bytes: padded to 6, the frame is refused.
            "the token's length in 5 bytes": getPage(prefix: [0x08, 0x07, 0x12, UInt8(token.count) | 0x80, 0x80, 0x80, 0x80, 0x00] + token),
            "the token's length in 6 bytes": getPage(prefix: [0x08, 0x07, 0x12, UInt8(token.count) | 0x80, 0x80, 0x80, 0x80, 0x80, 0x00] + token),
            "the token's key in 6 bytes": getPage(prefix: [0x08, 0x07, 0x92, 0x80, 0x80, 0x80, 0x80, 0x00, UInt8(token.count)] + token),
            "the id's key in 6 bytes": getPage(prefix: [0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x07] + tokenField),
            "the id in 10 bytes": getPage(prefix: [0x08, 0x87, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01] + tokenField),
            "the id in 11 bytes": getPage(prefix: [0x08, 0x87, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01] + tokenField),
            "the tenant id twice": getPage(prefix: [0x08, 0x07] + tokenField, extra: [0x0a, 0x00]),
            "the tenant id three times": getPage(prefix: [0x08, 0x07] + tokenField, extra: [0x0a, 0x00, 0x0a, 0x00]),
        ]
        for (what, bytes) in frames {
            for max in [1, 2, 3, 4, 5, 6, 1000] {  // the limit falls on each side of what a frame holds
                bytes.withUnsafeBytes { raw in
                    let plain = Wire.decodeCheckedRequest(raw, maxMessages: max)
                    let known = Wire.decodeCheckedRequest(raw, maxMessages: max, knownToken: "hdr.claims.sig")
                    #expect(known == plain, "\(what), at most \(max)")
                }
            }
        }
    }

    @Test func theTokenIsReadFromTheFirstBytes() {
        let token = Array("eyJ.e30.sig".utf8)
        let full = [0x08, 0x07, 0x12, UInt8(token.count)] + token + [0x5a, 0x80, 0x80, 0x04]
        func peek(_ b: [UInt8]) -> MessageShape.TokenPeek { b.withUnsafeBytes { MessageShape.peekAuthToken($0) } }
        #expect(peek(full) == .token("eyJ.e30.sig"))
        #expect(peek(Array(full.prefix(6))) == .needMore)
        #expect(peek([0x08]) == .needMore)
        #expect(peek([0x08, 0x07, 0x5a, 0x10]) == .none, "a body first: no token")
        #expect(peek([0x12, 0xFF, 0xFF, 0x01]) == .none, "a token over 8 KiB is none")
    }
}
