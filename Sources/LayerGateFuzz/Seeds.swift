import LayerGateStorage
import LayerGateTestSupport
import LayerGateWire

@testable import LayerGateStorage

/// Valid inputs for each target, made by the real encoders and writers: the
/// committed seed corpus (`layergate-fuzz --write-seeds Fuzz/corpus`).
public enum FuzzSeeds {
    public static func seeds(for target: FuzzTarget) throws -> [String: [UInt8]] {
        switch target {
        case .request: return requests()
        case .response: return responses()
        case .layer: return try layers()
        case .wal: return try walSegments()
        }
    }

    static let tenantId = StorageTargets.tenant.description
    static func key(_ block: UInt32) -> Wire.PageKey { Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: block) }

    static func requests() -> [String: [UInt8]] {
        let bodies: [(String, Wire.Request.Body)] = [
            ("get-page", .getPage(Wire.GetPageRequest(tenantId: tenantId, key: key(7), lsn: 42, waitMs: 100))),
            ("get-page-latest", .getPage(Wire.GetPageRequest(tenantId: tenantId, key: key(7), latest: true))),
            ("put-records", .putRecords(Wire.PutRecordsRequest(tenantId: tenantId, records: [
                Wire.Record(key: key(1), lsn: 10, value: .image([UInt8](repeating: 0xAB, count: 8192))),
                Wire.Record(key: key(1), lsn: 11, value: .delta(Wire.DeltaRecord(willInit: false, patches: [
                    Wire.Patch(offset: 100, data: [1, 2, 3]), Wire.Patch(offset: 8000, data: [4]),
                ]))),
            ]))),
            ("compact", .compact(Wire.CompactRequest(tenantId: tenantId, forceImageLayers: true))),
            ("reset-tenant", .resetTenant(Wire.ResetTenantRequest(tenantId: tenantId, dropCache: true))),
            ("create-tenant", .createTenant(Wire.CreateTenantRequest(tenantId: tenantId))),
            ("tenant-status", .tenantStatus(Wire.TenantStatusRequest(tenantId: tenantId))),
            ("list-tenants", .listTenants(Wire.ListTenantsRequest())),
            ("server-status", .serverStatus(Wire.ServerStatusRequest())),
            ("failpoints", .configureFailpoints(Wire.ConfigureFailpointsRequest(failpoints: [Wire.Failpoint(name: "wal-before-fsync", action: "sleep(5)")]))),
            // The form the server reads in place: images only (and the odd record without a key or a value).
            ("put-images", .putRecords(Wire.PutRecordsRequest(tenantId: tenantId, records: [
                Wire.Record(key: key(1), lsn: 10, value: .image([UInt8](repeating: 0xAB, count: 64))),
                Wire.Record(key: key(2), lsn: 11, value: .image([])),
                Wire.Record(key: nil, lsn: 12, value: .image([1, 2, 3])),
                Wire.Record(key: key(3), lsn: 13, value: nil),
            ]))),
            ("put-images-with-token", .putRecords(Wire.PutRecordsRequest(tenantId: tenantId, records: [
                Wire.Record(key: key(1), lsn: 10, value: .image([UInt8](repeating: 0xCD, count: 32))),
            ]))),
        ]
        var out: [String: [UInt8]] = [:]
        for (i, (name, body)) in bodies.enumerated() {
            out[name] = Wire.encode(Wire.Request(requestId: UInt64(i + 1), authToken: i % 2 == 0 ? "" : "eyJhbGciOiJFZERTQSJ9.e30.c2ln", body: body))
        }
        return out
    }

    static func responses() -> [String: [UInt8]] {
        let bodies: [(String, Wire.Response.Body)] = [
            ("get-page", .getPage(Wire.GetPageResponse(page: [UInt8](repeating: 0x5A, count: 8192), lsn: 42))),
            ("error", .error(Wire.Error(code: .lsnNotAvailable, message: "tenant \(tenantId): LSN 0/2A is not available"))),
            ("put-records", .putRecords(Wire.PutRecordsResponse(lastRecordLsn: 11))),
            ("list-tenants", .listTenants(Wire.ListTenantsResponse(tenantIds: [tenantId, tenantId]))),
        ]
        var out: [String: [UInt8]] = [:]
        for (i, (name, body)) in bodies.enumerated() {
            out[name] = Wire.encode(Wire.Response(requestId: UInt64(i + 1), body: body))
        }
        return out
    }

    static func layers() throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for (kind, name) in zip([LayerName.Kind.delta, .image], StorageTargets.layerNames) {
            guard let layer = LayerName(parsing: name) else { continue }
            let disk = SimulatedDisk()
            let dir = try DirectoryHandle(fs: disk, path: "")
            let w = try LayerWriter(directory: dir, tenant: StorageTargets.tenant, kind: kind, lsnStart: layer.lsnStart,
                                    lsnEnd: layer.lsnEnd, generation: 1, failpoints: Failpoints())
            // Small values (a page that starts from zeros), so the file stays a few blocks.
            for b in 0..<(kind == .image ? 2 : 12) as Range<UInt32> {
                let k = PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: b)
                let first: RecordValue = kind == .image
                    ? .image([UInt8](repeating: UInt8(b), count: 8192))
                    : .delta(Delta(willInit: true, patches: [Patch(offset: Int(b), data: [UInt8(b)])]))
                try w.append(key: k, lsn: layer.lsnStart, value: first)
                if kind == .delta {
                    try w.append(key: k, lsn: layer.lsnEnd, value: .delta(Delta(willInit: false, patches: [
                        Patch(offset: Int(b) * 10, data: [1, 2, 3]),
                    ])))
                }
            }
            let d = try w.finish()
            out[kind == .delta ? "delta" : "image"] = try disk.contents(of: d.fileName)
        }
        return out
    }

    static func walSegments() throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for sealed in [false, true] {
            let disk = SimulatedDisk()
            let dir = try DirectoryHandle(fs: disk, path: "")
            let wal = Wal(directory: dir, tenant: StorageTargets.tenant, replayed: WalReplay.Result())
            for lsn in 1...6 as ClosedRange<UInt64> {
                let k = PageKey(spcOid: 1663, dbOid: 5, relNumber: 1000, fork: 0, block: UInt32(lsn % 3))
                let r = Record(key: k, lsn: Lsn(lsn), value: .delta(Delta(willInit: lsn <= 3, patches: [Patch(offset: Int(lsn), data: [UInt8(lsn)])])))
                try wal.append([WalFormat.encodeRecords([r])], firstLsn: Lsn(lsn), lastLsn: Lsn(lsn), failpoints: Failpoints())
            }
            if sealed { wal.close() }
            out[sealed ? "sealed" : "open"] = try disk.contents(of: Wal.segmentName(Lsn(1)))
        }
        return out
    }
}
