import Testing

@testable import LayerGateWire

@Suite("PutRecords read in place")
struct InPlacePutRecordsTests {
    static let tenant = "0123456789abcdef0123456789ABCDEF"
    static let token = "eyJhbGciOiJFZERTQSJ9.e30.c2ln"
    static func key(_ block: UInt32) -> Wire.PageKey { Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1 << 31, fork: 0, block: block) }
    static func image(_ seed: UInt8) -> [UInt8] { (0..<8192).map { UInt8(truncatingIfNeeded: $0) &+ seed } }

    static func put(id: UInt64 = 9, token: String = "", tenant: String = tenant, _ records: [Wire.Record]) -> [UInt8] {
        Wire.encode(Wire.Request(requestId: id, authToken: token,
                                 body: .putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: records))))
    }

    static let images = (0..<64).map { i in Wire.Record(key: key(UInt32(i)), lsn: 100 + UInt64(i), value: .image(image(UInt8(i)))) }

    static func inPlace(_ bytes: [UInt8], known: String? = nil, maxMessages: Int = 1000) -> Wire.Request? {
        bytes.withUnsafeBytes { Wire.readPutRecordsInPlace($0, knownToken: known, maxMessages: maxMessages) }
    }

    /// Every put read in place is the one the decoder makes.
    static func expectSameAsDecoder(_ bytes: [UInt8], known: String? = nil, maxMessages: Int = 1000,
                                    sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try #require(inPlace(bytes, known: known, maxMessages: maxMessages), sourceLocation: sourceLocation)
        let decoded = bytes.withUnsafeBytes { Wire.decodeCheckedRequest($0, maxMessages: maxMessages) }
        #expect(decoded == .success(r), sourceLocation: sourceLocation)
    }

    @Test func plainPutsOfImagesAreReadAsTheDecoderReadsThem() throws {
        try Self.expectSameAsDecoder(Self.put(Self.images))
        try Self.expectSameAsDecoder(Self.put(id: 0, [Wire.Record(key: Self.key(0), lsn: 0, value: .image([]))]))
        try Self.expectSameAsDecoder(Self.put(id: .max, [Wire.Record(key: Self.key(.max), lsn: .max, value: .image([7]))]))
        // What the server refuses later, read as the decoder reads it: no key, no value, no records.
        try Self.expectSameAsDecoder(Self.put([Wire.Record(key: nil, lsn: 5, value: .image([1, 2]))]))
        try Self.expectSameAsDecoder(Self.put([Wire.Record(key: Self.key(1), lsn: 5, value: nil)]))
        try Self.expectSameAsDecoder(Self.put([]))
        let r = try #require(Self.inPlace(Self.put(Self.images)))
        guard case .putRecords(let p)? = r.body else { Issue.record("not a put: \(r)"); return }
        #expect(p.tenantId == Self.tenant, "as sent, case and all")
        #expect(p.records == Self.images)
    }

    @Test func aTokenIsTakenAsSent() throws {
        let small = [Wire.Record(key: Self.key(1), lsn: 5, value: .image([1, 2, 3]))]
        try Self.expectSameAsDecoder(Self.put(token: Self.token, small), known: nil)
        try Self.expectSameAsDecoder(Self.put(token: Self.token, small), known: Self.token)
        try Self.expectSameAsDecoder(Self.put(token: Self.token + "x", small), known: Self.token)
        try Self.expectSameAsDecoder(Self.put(token: "é", small), known: nil)
        // The encoder stops a string at a NUL; a peer need not.
        func withTokenByte(_ byte: UInt8) throws -> [UInt8] {
            var bytes = Self.put(token: "ab", small)
            bytes[try #require(bytes.firstIndex(of: UInt8(ascii: "a")))] = byte
            return bytes
        }
        #expect(Self.inPlace(try withTokenByte(0)) == nil, "a NUL (protobuf-c would cut the token there)")
        #expect(Self.inPlace(try withTokenByte(0xFF)) == nil, "not UTF-8 (the decoder refuses it)")
    }

    /// protobuf-c allocates for the body, the tenant id, the token, and each
    /// record, key and image: past the limit the decoder refuses the put.
    @Test func theAllocationLimitIsTheDecodersLimit() throws {
        let three = Array(Self.images.prefix(3))
        let needed = 2 + 3 * 3
        try Self.expectSameAsDecoder(Self.put(three), maxMessages: needed)
        #expect(Self.inPlace(Self.put(three), maxMessages: needed - 1) == nil)
        #expect(Self.inPlace(Self.put(token: Self.token, three), maxMessages: needed) == nil)
        try Self.expectSameAsDecoder(Self.put(token: Self.token, three), maxMessages: needed + 1)
        let refused = Self.put(three).withUnsafeBytes { Wire.decodeCheckedRequest($0, maxMessages: needed - 1) }
        guard case .failure = refused else {
            Issue.record("the decoder took a put past its limit")
            return
        }
    }

    /// What protobuf-c would merge, keep or refuse is left to the decoder.
    @Test func anythingButThePlainFormIsLeftToTheDecoder() {
        let plain = Self.put(Self.images)
        let delta = Wire.Record(key: Self.key(1), lsn: 200, value: .delta(Wire.DeltaRecord(willInit: true, patches: [])))
        #expect(Self.inPlace(Self.put(Self.images + [delta])) == nil, "a delta")
        #expect(Self.inPlace(Self.put(tenant: "0123456789abcdef0123456789abcdeg", Self.images)) == nil, "not hex")
        #expect(Self.inPlace(Self.put(tenant: "0123456789abcdef", Self.images)) == nil, "too short")
        #expect(Self.inPlace(plain + [0x08, 0x09]) == nil, "request_id twice")
        #expect(Self.inPlace(plain + [0x18, 0x01]) == nil, "an unknown field")
        #expect(Self.inPlace(plain + [0x5A, 0x00]) == nil, "put_records twice (protobuf-c merges)")
        #expect(Self.inPlace(Array(plain.dropLast())) == nil, "cut short")
        // A body of one record, with what is added to the record.
        func record(_ fields: [UInt8]) -> [UInt8] {
            var body: [UInt8] = [0x0A, 32] + Array(Self.tenant.utf8) + [0x12, UInt8(fields.count)] + fields
            body = [0x5A, UInt8(body.count)] + body
            return [0x08, 0x01] + body
        }
        let key: [UInt8] = [0x0A, 0x02, 0x28, 0x07]
        #expect(Self.inPlace(record(key + [0x10, 0x05, 0x1A, 0x01, 0xAA])) != nil)
        #expect(Self.inPlace(record(key + [0x10, 0x05, 0x10, 0x06])) == nil, "lsn twice")
        #expect(Self.inPlace(record(key + [0x1A, 0x01, 0xAA, 0x1A, 0x01, 0xBB])) == nil, "image twice (the last wins in protobuf-c)")
        #expect(Self.inPlace(record(key + key)) == nil, "key twice (protobuf-c merges)")
        #expect(Self.inPlace(record(key + [0x30, 0x01])) == nil, "unknown field 6")
        #expect(Self.inPlace(record(key + [0x11, 1, 0, 0, 0, 0, 0, 0, 0])) == nil, "lsn as fixed64")
        #expect(Self.inPlace(record([0x0A, 0x06, 0x28, 0x80, 0x80, 0x80, 0x80, 0x10])) == nil, "block past 32 bits")
        #expect(Self.inPlace(record(key + [0x22, 0x00])) == nil, "an empty delta")
    }
}
