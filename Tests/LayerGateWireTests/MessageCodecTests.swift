import Testing

@testable import LayerGateWire

let tenant = "0123456789abcdef0123456789abcdef"
let key = Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 16384, fork: 0, block: 42)

let everyRequest: [Wire.Request.Body?] = [
    nil,
    .getPage(Wire.GetPageRequest(tenantId: tenant, key: key, lsn: 0x1234_5678_9ABC, latest: false, waitMs: 250)),
    .getPage(Wire.GetPageRequest(tenantId: tenant, key: nil, latest: true)),
    .putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: [
        Wire.Record(key: key, lsn: 10, value: .image([UInt8](repeating: 0xAB, count: 8192))),
        Wire.Record(key: key, lsn: 11, value: .delta(Wire.DeltaRecord(willInit: false, patches: [
            Wire.Patch(offset: 0, data: [1, 2, 3]), Wire.Patch(offset: 8191, data: [9]),
        ]))),
        Wire.Record(key: key, lsn: 12, value: .delta(Wire.DeltaRecord(willInit: true, patches: []))),
        Wire.Record(key: nil, lsn: 13, value: nil),
    ])),
    .putRecords(Wire.PutRecordsRequest(tenantId: tenant, records: [])),
    .compact(Wire.CompactRequest(tenantId: tenant, forceImageLayers: true)),
    .resetTenant(Wire.ResetTenantRequest(tenantId: tenant, dropCache: true)),
    .createTenant(Wire.CreateTenantRequest(tenantId: tenant)),
    .tenantStatus(Wire.TenantStatusRequest(tenantId: tenant)),
    .listTenants(Wire.ListTenantsRequest()),
    .serverStatus(Wire.ServerStatusRequest()),
    .configureFailpoints(Wire.ConfigureFailpointsRequest(failpoints: [
        Wire.Failpoint(name: "index-before-rename", action: "return"), Wire.Failpoint(name: "x", action: "sleep(5)"),
    ])),
]

let everyResponse: [Wire.Response.Body?] = [
    nil,
    .error(Wire.Error(code: .tenantNotFound, message: "tenant 0123… not found")),
    .error(Wire.Error(code: .unknown(99), message: "from a newer server")),
    .getPage(Wire.GetPageResponse(page: [UInt8](repeating: 0x5A, count: 8192), lsn: 77)),
    .putRecords(Wire.PutRecordsResponse(lastRecordLsn: 12)),
    .compact(Wire.CompactResponse(layersCreated: 3, layersRemoved: 10, bytesWritten: 1 << 33)),
    .resetTenant(Wire.ResetTenantResponse(generation: 7, filesSwept: 2)),
    .createTenant(Wire.CreateTenantResponse()),
    .tenantStatus(Wire.TenantStatusResponse(
        tenantId: tenant, state: "active", lastRecordLsn: 100, diskConsistentLsn: 90, generation: 3,
        layers: [Wire.LayerInfo(name: "a__b", isImage: true, lsnStart: 90, lsnEnd: 90, size: 16384)],
        compactionFailures: 1, lastCompactionError: "disk full", flushFailures: 3, lastFlushError: "no space",
        walTailCuts: 1, lastWalTailCut: "cut 8 bytes")),
    .tenantStatus(Wire.TenantStatusResponse(
        tenantId: tenant, state: "loading", lastRecordLsn: 0, diskConsistentLsn: 0, generation: 0, layers: [],
        compactionFailures: 0, lastCompactionError: "")),
    .listTenants(Wire.ListTenantsResponse(tenantIds: [tenant, "ffffffffffffffffffffffffffffffff"])),
    .listTenants(Wire.ListTenantsResponse(tenantIds: [])),
    .serverStatus(Wire.ServerStatusResponse(pageCacheCapacity: 16384, pageCacheHits: 5, pageCacheMisses: 6, requests: 7,
                                            connections: 2, version: "0.1.0")),
    .configureFailpoints(Wire.ConfigureFailpointsResponse()),
]

@Suite("Messages through protobuf-c")
struct MessageCodecTests {
    @Test(arguments: everyRequest.indices)
    func everyRequestRoundTrips(_ i: Int) throws {
        let r = Wire.Request(requestId: UInt64(i) << 40 | 5, authToken: i % 2 == 0 ? "" : "token", body: everyRequest[i])
        #expect(try Wire.decodeRequest(Wire.encode(r)) == r)
    }

    @Test(arguments: everyResponse.indices)
    func everyResponseRoundTrips(_ i: Int) throws {
        let r = Wire.Response(requestId: UInt64(i), body: everyResponse[i])
        #expect(try Wire.decodeResponse(Wire.encode(r)) == r)
    }

    /// Bytes worked out by hand from the protobuf encoding rules: the wire
    /// format is what other languages' clients produce, not just our own round trip.
    @Test func encodingMatchesTheProtobufSpec() throws {
        // request_id = 1 (field 1, varint), list_tenants = {} (field 16, length 0).
        let r = Wire.Request(requestId: 1, body: .listTenants(Wire.ListTenantsRequest()))
        #expect(Wire.encode(r) == [0x08, 0x01, 0x82, 0x01, 0x00])
        // Response: request_id 0 is omitted; error (field 2) = { code 8 (field 1), message "x" (field 2) }.
        let e = Wire.Response(requestId: 0, body: .error(Wire.Error(code: .frameTooLarge, message: "x")))
        #expect(Wire.encode(e) == [0x12, 0x05, 0x08, 0x08, 0x12, 0x01, 0x78])
        #expect(try Wire.decodeResponse([0x12, 0x05, 0x08, 0x08, 0x12, 0x01, 0x78]) == e)
    }

    @Test func aRequestWithoutABodyDecodesWithNilBody() throws {
        let r = try Wire.decodeRequest([0x08, 0x07])
        #expect(r.requestId == 7 && r.body == nil)
        #expect(try Wire.decodeRequest([]).body == nil)  // the empty message is a valid Request
    }

    @Test func unknownErrorCodesSurviveARoundTrip() throws {
        // code 42 arrives from a newer server.
        let r = try Wire.decodeResponse([0x12, 0x02, 0x08, 42])
        #expect(r.body == .error(Wire.Error(code: .unknown(42), message: "")))
        #expect(Wire.ErrorCode(rawValue: 42).name == "ERROR_CODE_42")
        #expect(Wire.ErrorCode(rawValue: 11) == .lsnBelowGcHorizon)
    }

    @Test(arguments: [
        [0xFF], [0x08], [0x0A, 0x05, 0x01], [0x82, 0x01, 0x05, 0x00], [0x07, 0x00],
    ] as [[UInt8]])
    func garbageIsADecodeErrorNotACrash(_ bytes: [UInt8]) {
        #expect(throws: Wire.DecodeError.self) { try Wire.decodeRequest(bytes) }
    }

    @Test func errorCodeNamesMatchTheProto() {
        let names = (0...13).map { Wire.ErrorCode(rawValue: Int32($0)).name }
        #expect(names == ["ERROR_CODE_UNSPECIFIED", "INVALID_ARGUMENT", "TENANT_NOT_FOUND", "PAGE_NOT_FOUND", "LSN_NOT_AVAILABLE",
                          "TENANT_UNAVAILABLE", "LAYER_EXISTS", "PERMISSION_DENIED", "FRAME_TOO_LARGE", "INTERNAL",
                          "TENANT_EXISTS", "LSN_BELOW_GC_HORIZON", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"])
    }
}

/// The server decodes small frames into a reused arena (and large ones, which
/// overflow it, partly into malloc): the values are the same as without.
@Suite("Decoding into an arena")
struct DecodeArenaTests {
    @Test func everyRequestDecodesTheSameIntoAnArena() throws {
        let arena = DecodeArena(capacity: 1024)
        for round in 0..<3 {
            for body in everyRequest {
                let request = Wire.Request(requestId: UInt64(round + 1), authToken: "hdr.claims.sig", body: body)
                let bytes = Wire.encode(request)
                let plain = try bytes.withUnsafeBytes { try Wire.decodeRequest($0) }
                let viaArena = try bytes.withUnsafeBytes { try Wire.decodeRequest($0, knownToken: "hdr.claims.sig", arena: arena) }
                #expect(viaArena == plain && plain == request)
            }
        }
    }
}
