import Testing

@testable import LayerGateWire

/// The clients read a GetPage answer in place (`readGetPageAnswerInPlace`)
/// when it has the plain form, and get what protobuf-c would have given;
/// any other form is left to protobuf-c.
@Suite("GetPage answer read in place")
struct InPlaceGetPageAnswerTests {
    static func answer(id: UInt64 = 9, page: [UInt8] = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7) }, lsn: UInt64 = 1 << 40)
        -> [UInt8]
    {
        Wire.encode(Wire.Response(requestId: id, body: .getPage(Wire.GetPageResponse(page: page, lsn: lsn))))
    }

    static func inPlace(_ bytes: [UInt8]) -> Wire.Response? { bytes.withUnsafeBytes { Wire.readGetPageAnswerInPlace($0) } }

    static func protobufC(_ bytes: [UInt8]) -> Wire.Response? { bytes.withUnsafeBytes { try? Wire.decodeResponseWithProtobufC($0) } }

    static func expectSameAsProtobufC(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let read = try #require(inPlace(bytes), sourceLocation: sourceLocation)
        #expect(protobufC(bytes) == read, sourceLocation: sourceLocation)
        #expect(bytes.withUnsafeBytes { try? Wire.decodeResponse($0) } == read, sourceLocation: sourceLocation)
    }

    @Test func plainAnswersAreReadAsProtobufCReadsThem() throws {
        try Self.expectSameAsProtobufC(Self.answer())
        try Self.expectSameAsProtobufC(Self.answer(id: 0, page: [], lsn: 0))  // every field at its default: an empty body
        try Self.expectSameAsProtobufC(Self.answer(id: .max, page: [1], lsn: .max))
        let r = try #require(Self.inPlace(Self.answer()))
        #expect(r.requestId == 9)
        guard case .getPage(let g)? = r.body else {
            Issue.record("not a GetPage answer: \(r)")
            return
        }
        #expect(g.page.count == 8192 && g.lsn == 1 << 40)
        // The fields in the other order.
        let body: [UInt8] = [0x10, 0x05, 0x0A, 0x02, 0xAB, 0xCD]
        try Self.expectSameAsProtobufC([0x52, UInt8(body.count)] + body + [0x08, 0x03])
    }

    @Test func anythingButThePlainFormIsLeftToProtobufC() throws {
        let plain = Self.answer(page: [1, 2, 3])
        #expect(Self.inPlace(plain + [0x08, 0x09]) == nil, "request_id twice")
        #expect(Self.inPlace(plain + [0x52, 0x00]) == nil, "get_page twice (protobuf-c merges)")
        #expect(Self.inPlace(plain + [0x5A, 0x00]) == nil, "another body after it (the last one wins)")
        #expect(Self.inPlace(plain + [0x18, 0x01]) == nil, "an unknown field")
        #expect(Self.inPlace(Array(plain.dropLast())) == nil, "cut short")
        #expect(Self.inPlace(Wire.encode(Wire.Response(requestId: 1, body: .putRecords(Wire.PutRecordsResponse(lastRecordLsn: 5))))) == nil)
        #expect(Self.inPlace(Wire.encode(Wire.Response(requestId: 1, body: nil))) == nil, "no body")
        func body(_ fields: [UInt8]) -> [UInt8] { [0x08, 0x01, 0x52, UInt8(fields.count)] + fields }
        #expect(Self.inPlace(body([0x0A, 0x01, 0x01, 0x0A, 0x01, 0x02])) == nil, "page twice")
        #expect(Self.inPlace(body([0x10, 0x01, 0x10, 0x02])) == nil, "lsn twice")
        #expect(Self.inPlace(body([0x11, 1, 0, 0, 0, 0, 0, 0, 0])) == nil, "lsn as fixed64")
        #expect(Self.inPlace(body([0x10] + [UInt8](repeating: 0xFF, count: 9) + [0x02])) == nil, "lsn past 64 bits")
        #expect(Self.inPlace(body([0x18, 0x01])) == nil, "an unknown field in the body")
        #expect(Self.inPlace(body([0x0A, 0x05, 0x01])) == nil, "a page longer than the body")
        // Where protobuf-c reads them, decodeResponse gives what it gives.
        for bytes in [plain + [0x08, 0x09], plain + [0x52, 0x00], body([0x10, 0x01, 0x10, 0x02])] {
            let general = try #require(Self.protobufC(bytes))
            #expect(bytes.withUnsafeBytes { try? Wire.decodeResponse($0) } == general)
        }
    }
}
