import CLayerGateProto

/// Conversion between `Wire` values and protobuf-c, and the byte form.
extension Wire {
    /// Bytes that are not a valid message of the expected type.
    public struct DecodeError: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    // MARK: Request

    public static func encode(_ request: Request) -> [UInt8] {
        withCRequest(request) { m in
            let size = layergate__v1__request__get_packed_size(m)
            return [UInt8](unsafeUninitializedCapacity: size) { buf, n in
                n = layergate__v1__request__pack(m, buf.baseAddress)
            }
        }
    }

    /// Calls `body` with the protobuf-c form of `request`, valid only during the call.
    static func withCRequest<R>(_ request: Request, _ body: (UnsafePointer<Layergate__V1__Request>) -> R) -> R {
        let a = CArena()
        let m = a.message(Layergate__V1__Request.self) { layergate__v1__request__init($0) }
        m.pointee.request_id = request.requestId
        m.pointee.auth_token = a.string(request.authToken)
        switch request.body {
        case nil:
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY__NOT_SET
        case .getPage(let r)?:
            let p = a.message(Layergate__V1__GetPageRequest.self) { layergate__v1__get_page_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            p.pointee.key = r.key.map { pageKey($0, a) }
            p.pointee.lsn = r.lsn
            p.pointee.latest = r.latest ? 1 : 0
            p.pointee.wait_ms = r.waitMs
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_GET_PAGE
            m.pointee.get_page = p
        case .putRecords(let r)?:
            let p = a.message(Layergate__V1__PutRecordsRequest.self) { layergate__v1__put_records_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            let list = a.pointers(to: Layergate__V1__Record.self, count: r.records.count)
            for (i, rec) in r.records.enumerated() { list[i] = record(rec, a) }
            p.pointee.n_records = r.records.count
            p.pointee.records = list
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_PUT_RECORDS
            m.pointee.put_records = p
        case .compact(let r)?:
            let p = a.message(Layergate__V1__CompactRequest.self) { layergate__v1__compact_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            p.pointee.force_image_layers = r.forceImageLayers ? 1 : 0
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_COMPACT
            m.pointee.compact = p
        case .resetTenant(let r)?:
            let p = a.message(Layergate__V1__ResetTenantRequest.self) { layergate__v1__reset_tenant_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            p.pointee.drop_cache = r.dropCache ? 1 : 0
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_RESET_TENANT
            m.pointee.reset_tenant = p
        case .attachTenant(let r)?:
            let p = a.message(Layergate__V1__AttachTenantRequest.self) { layergate__v1__attach_tenant_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            p.pointee.generation = r.generation
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_ATTACH_TENANT
            m.pointee.attach_tenant = p
        case .detachTenant(let r)?:
            let p = a.message(Layergate__V1__DetachTenantRequest.self) { layergate__v1__detach_tenant_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_DETACH_TENANT
            m.pointee.detach_tenant = p
        case .createTenant(let r)?:
            let p = a.message(Layergate__V1__CreateTenantRequest.self) { layergate__v1__create_tenant_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_CREATE_TENANT
            m.pointee.create_tenant = p
        case .tenantStatus(let r)?:
            let p = a.message(Layergate__V1__TenantStatusRequest.self) { layergate__v1__tenant_status_request__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_TENANT_STATUS
            m.pointee.tenant_status = p
        case .listTenants?:
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_LIST_TENANTS
            m.pointee.list_tenants = a.message(Layergate__V1__ListTenantsRequest.self) { layergate__v1__list_tenants_request__init($0) }
        case .serverStatus?:
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_SERVER_STATUS
            m.pointee.server_status = a.message(Layergate__V1__ServerStatusRequest.self) { layergate__v1__server_status_request__init($0) }
        case .configureFailpoints(let r)?:
            let p = a.message(Layergate__V1__ConfigureFailpointsRequest.self) { layergate__v1__configure_failpoints_request__init($0) }
            let list = a.pointers(to: Layergate__V1__Failpoint.self, count: r.failpoints.count)
            for (i, f) in r.failpoints.enumerated() {
                let fp = a.message(Layergate__V1__Failpoint.self) { layergate__v1__failpoint__init($0) }
                fp.pointee.name = a.string(f.name)
                fp.pointee.action = a.string(f.action)
                list[i] = fp
            }
            p.pointee.n_failpoints = r.failpoints.count
            p.pointee.failpoints = list
            m.pointee.body_case = LAYERGATE__V1__REQUEST__BODY_CONFIGURE_FAILPOINTS
            m.pointee.configure_failpoints = p
        }
        return withExtendedLifetime(a) { body(m) }
    }

    /// `knownToken`: a token this peer sent before; when the request carries
    /// the same bytes it is reused, not copied into a new String (a token is
    /// on every request of a server that checks them).
    /// `arena`: decode into it instead of malloc (the event loop's small frames).
    public static func decodeRequest(_ bytes: UnsafeRawBufferPointer, knownToken: String? = nil,
                                     arena: DecodeArena? = nil) throws(DecodeError) -> Request {
        guard let arena else { return try decodeRequest(bytes, knownToken: knownToken, allocator: nil) }
        return try arena.withAllocator { a in
            Result { () throws(DecodeError) in try decodeRequest(bytes, knownToken: knownToken, allocator: a) }
        }.get()
    }

    private static func decodeRequest(_ bytes: UnsafeRawBufferPointer, knownToken: String?,
                                      allocator: UnsafeMutablePointer<ProtobufCAllocator>?) throws(DecodeError) -> Request {
        guard let m = layergate__v1__request__unpack(allocator, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        else { throw DecodeError(message: "bytes do not decode as a layergate.v1.Request") }
        defer { layergate__v1__request__free_unpacked(m, allocator) }
        let r = m.pointee
        var out = Request(requestId: r.request_id, authToken: CRead.string(r.auth_token, reusing: knownToken), body: nil)
        switch r.body_case {
        case LAYERGATE__V1__REQUEST__BODY_GET_PAGE:
            if let p = r.get_page?.pointee {
                out.body = .getPage(GetPageRequest(tenantId: CRead.string(p.tenant_id), key: p.key.map { pageKey($0.pointee) },
                                                   lsn: p.lsn, latest: p.latest != 0, waitMs: p.wait_ms))
            }
        case LAYERGATE__V1__REQUEST__BODY_PUT_RECORDS:
            if let p = r.put_records?.pointee {
                out.body = .putRecords(PutRecordsRequest(tenantId: CRead.string(p.tenant_id),
                                                         records: CRead.array(p.records, p.n_records, record)))
            }
        case LAYERGATE__V1__REQUEST__BODY_COMPACT:
            if let p = r.compact?.pointee {
                out.body = .compact(CompactRequest(tenantId: CRead.string(p.tenant_id), forceImageLayers: p.force_image_layers != 0))
            }
        case LAYERGATE__V1__REQUEST__BODY_RESET_TENANT:
            if let p = r.reset_tenant?.pointee {
                out.body = .resetTenant(ResetTenantRequest(tenantId: CRead.string(p.tenant_id), dropCache: p.drop_cache != 0))
            }
        case LAYERGATE__V1__REQUEST__BODY_ATTACH_TENANT:
            if let p = r.attach_tenant?.pointee {
                out.body = .attachTenant(AttachTenantRequest(tenantId: CRead.string(p.tenant_id), generation: p.generation))
            }
        case LAYERGATE__V1__REQUEST__BODY_DETACH_TENANT:
            if let p = r.detach_tenant?.pointee { out.body = .detachTenant(DetachTenantRequest(tenantId: CRead.string(p.tenant_id))) }
        case LAYERGATE__V1__REQUEST__BODY_CREATE_TENANT:
            if let p = r.create_tenant?.pointee { out.body = .createTenant(CreateTenantRequest(tenantId: CRead.string(p.tenant_id))) }
        case LAYERGATE__V1__REQUEST__BODY_TENANT_STATUS:
            if let p = r.tenant_status?.pointee { out.body = .tenantStatus(TenantStatusRequest(tenantId: CRead.string(p.tenant_id))) }
        case LAYERGATE__V1__REQUEST__BODY_LIST_TENANTS:
            out.body = .listTenants(ListTenantsRequest())
        case LAYERGATE__V1__REQUEST__BODY_SERVER_STATUS:
            out.body = .serverStatus(ServerStatusRequest())
        case LAYERGATE__V1__REQUEST__BODY_CONFIGURE_FAILPOINTS:
            if let p = r.configure_failpoints?.pointee {
                out.body = .configureFailpoints(ConfigureFailpointsRequest(failpoints: CRead.array(p.failpoints, p.n_failpoints) {
                    Failpoint(name: CRead.string($0.name), action: CRead.string($0.action))
                }))
            }
        default:
            break
        }
        return out
    }

    // MARK: Response

    public static func encode(_ response: Response) -> [UInt8] {
        withCResponse(response) { m in
            let size = layergate__v1__response__get_packed_size(m)
            return [UInt8](unsafeUninitializedCapacity: size) { buf, n in
                n = layergate__v1__response__pack(m, buf.baseAddress)
            }
        }
    }

    /// Calls `body` with the protobuf-c form of `response`, valid only during the call.
    /// A GetPage answer (the hot path) is built on the stack around the page's own
    /// storage: no allocation, and the page is copied once, by `pack`.
    static func withCResponse<R>(_ response: Response, _ body: (UnsafePointer<Layergate__V1__Response>) -> R) -> R {
        if case .getPage(let r)? = response.body {
            var message = Layergate__V1__Response()
            layergate__v1__response__init(&message)
            var getPage = Layergate__V1__GetPageResponse()
            layergate__v1__get_page_response__init(&getPage)
            return r.page.withUnsafeBufferPointer { page in
                // protobuf-c's field is not const; packing only reads it.
                getPage.page = ProtobufCBinaryData(len: page.count, data: UnsafeMutablePointer(mutating: page.baseAddress))
                getPage.lsn = r.lsn
                return withUnsafeMutablePointer(to: &getPage) { getPagePointer in
                    message.request_id = response.requestId
                    message.body_case = LAYERGATE__V1__RESPONSE__BODY_GET_PAGE
                    message.get_page = getPagePointer
                    return withUnsafePointer(to: &message) { body($0) }
                }
            }
        }
        let a = CArena()
        let m = a.message(Layergate__V1__Response.self) { layergate__v1__response__init($0) }
        m.pointee.request_id = response.requestId
        switch response.body {
        case nil:
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY__NOT_SET
        case .error(let e)?:
            let p = a.message(Layergate__V1__Error.self) { layergate__v1__error__init($0) }
            p.pointee.code = Layergate__V1__ErrorCode(rawValue: UInt32(bitPattern: e.code.rawValue))
            p.pointee.message = a.string(e.message)
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_ERROR
            m.pointee.error = p
        case .getPage?:
            preconditionFailure("GetPage answers are built on the stack above")
        case .putRecords(let r)?:
            let p = a.message(Layergate__V1__PutRecordsResponse.self) { layergate__v1__put_records_response__init($0) }
            p.pointee.last_record_lsn = r.lastRecordLsn
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_PUT_RECORDS
            m.pointee.put_records = p
        case .compact(let r)?:
            let p = a.message(Layergate__V1__CompactResponse.self) { layergate__v1__compact_response__init($0) }
            p.pointee.layers_created = r.layersCreated
            p.pointee.layers_removed = r.layersRemoved
            p.pointee.bytes_written = r.bytesWritten
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_COMPACT
            m.pointee.compact = p
        case .resetTenant(let r)?:
            let p = a.message(Layergate__V1__ResetTenantResponse.self) { layergate__v1__reset_tenant_response__init($0) }
            p.pointee.generation = r.generation
            p.pointee.files_swept = r.filesSwept
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_RESET_TENANT
            m.pointee.reset_tenant = p
        case .attachTenant(let r)?:
            let p = a.message(Layergate__V1__AttachTenantResponse.self) { layergate__v1__attach_tenant_response__init($0) }
            p.pointee.generation = r.generation
            p.pointee.layers = r.layers
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_ATTACH_TENANT
            m.pointee.attach_tenant = p
        case .detachTenant(let r)?:
            let p = a.message(Layergate__V1__DetachTenantResponse.self) { layergate__v1__detach_tenant_response__init($0) }
            p.pointee.remote_consistent_lsn = r.remoteConsistentLsn
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_DETACH_TENANT
            m.pointee.detach_tenant = p
        case .createTenant?:
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_CREATE_TENANT
            m.pointee.create_tenant = a.message(Layergate__V1__CreateTenantResponse.self) { layergate__v1__create_tenant_response__init($0) }
        case .tenantStatus(let r)?:
            let p = a.message(Layergate__V1__TenantStatusResponse.self) { layergate__v1__tenant_status_response__init($0) }
            p.pointee.tenant_id = a.string(r.tenantId)
            p.pointee.state = a.string(r.state)
            p.pointee.last_record_lsn = r.lastRecordLsn
            p.pointee.disk_consistent_lsn = r.diskConsistentLsn
            p.pointee.generation = r.generation
            let list = a.pointers(to: Layergate__V1__LayerInfo.self, count: r.layers.count)
            for (i, l) in r.layers.enumerated() {
                let li = a.message(Layergate__V1__LayerInfo.self) { layergate__v1__layer_info__init($0) }
                li.pointee.name = a.string(l.name)
                li.pointee.is_image = l.isImage ? 1 : 0
                li.pointee.lsn_start = l.lsnStart
                li.pointee.lsn_end = l.lsnEnd
                li.pointee.size = l.size
                list[i] = li
            }
            p.pointee.n_layers = r.layers.count
            p.pointee.layers = list
            p.pointee.compaction_failures = r.compactionFailures
            p.pointee.last_compaction_error = a.string(r.lastCompactionError)
            p.pointee.flush_failures = r.flushFailures
            p.pointee.last_flush_error = a.string(r.lastFlushError)
            p.pointee.wal_tail_cuts = r.walTailCuts
            p.pointee.last_wal_tail_cut = a.string(r.lastWalTailCut)
            p.pointee.remote_consistent_lsn = r.remoteConsistentLsn
            p.pointee.layers_pending_upload = r.layersPendingUpload
            p.pointee.remote_upload_error = a.string(r.remoteUploadError)
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_TENANT_STATUS
            m.pointee.tenant_status = p
        case .listTenants(let r)?:
            let p = a.message(Layergate__V1__ListTenantsResponse.self) { layergate__v1__list_tenants_response__init($0) }
            let list = a.pointers(to: CChar.self, count: r.tenantIds.count)
            for (i, t) in r.tenantIds.enumerated() { list[i] = a.string(t) }
            p.pointee.n_tenant_ids = r.tenantIds.count
            p.pointee.tenant_ids = list
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_LIST_TENANTS
            m.pointee.list_tenants = p
        case .serverStatus(let r)?:
            let p = a.message(Layergate__V1__ServerStatusResponse.self) { layergate__v1__server_status_response__init($0) }
            p.pointee.page_cache_capacity = r.pageCacheCapacity
            p.pointee.page_cache_hits = r.pageCacheHits
            p.pointee.page_cache_misses = r.pageCacheMisses
            p.pointee.requests = r.requests
            p.pointee.connections = r.connections
            p.pointee.version = a.string(r.version)
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_SERVER_STATUS
            m.pointee.server_status = p
        case .configureFailpoints?:
            m.pointee.body_case = LAYERGATE__V1__RESPONSE__BODY_CONFIGURE_FAILPOINTS
            m.pointee.configure_failpoints = a.message(Layergate__V1__ConfigureFailpointsResponse.self) {
                layergate__v1__configure_failpoints_response__init($0)
            }
        }
        return withExtendedLifetime(a) { body(m) }
    }

    /// A Response: a GetPage answer in its plain form read in place
    /// (`readGetPageAnswerInPlace`), anything else by protobuf-c.
    public static func decodeResponse(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> Response {
        if let answer = readGetPageAnswerInPlace(bytes) { return answer }
        return try decodeResponseWithProtobufC(bytes)
    }

    public static func decodeResponseWithProtobufC(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) -> Response {
        guard let m = layergate__v1__response__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        else { throw DecodeError(message: "bytes do not decode as a layergate.v1.Response") }
        defer { layergate__v1__response__free_unpacked(m, nil) }
        let r = m.pointee
        var out = Response(requestId: r.request_id, body: nil)
        switch r.body_case {
        case LAYERGATE__V1__RESPONSE__BODY_ERROR:
            if let p = r.error?.pointee {
                out.body = .error(Error(code: ErrorCode(rawValue: Int32(bitPattern: p.code.rawValue)), message: CRead.string(p.message)))
            }
        case LAYERGATE__V1__RESPONSE__BODY_GET_PAGE:
            if let p = r.get_page?.pointee { out.body = .getPage(GetPageResponse(page: CRead.bytes(p.page), lsn: p.lsn)) }
        case LAYERGATE__V1__RESPONSE__BODY_PUT_RECORDS:
            if let p = r.put_records?.pointee { out.body = .putRecords(PutRecordsResponse(lastRecordLsn: p.last_record_lsn)) }
        case LAYERGATE__V1__RESPONSE__BODY_COMPACT:
            if let p = r.compact?.pointee {
                out.body = .compact(CompactResponse(layersCreated: p.layers_created, layersRemoved: p.layers_removed,
                                                    bytesWritten: p.bytes_written))
            }
        case LAYERGATE__V1__RESPONSE__BODY_RESET_TENANT:
            if let p = r.reset_tenant?.pointee {
                out.body = .resetTenant(ResetTenantResponse(generation: p.generation, filesSwept: p.files_swept))
            }
        case LAYERGATE__V1__RESPONSE__BODY_ATTACH_TENANT:
            if let p = r.attach_tenant?.pointee {
                out.body = .attachTenant(AttachTenantResponse(generation: p.generation, layers: p.layers))
            }
        case LAYERGATE__V1__RESPONSE__BODY_DETACH_TENANT:
            if let p = r.detach_tenant?.pointee { out.body = .detachTenant(DetachTenantResponse(remoteConsistentLsn: p.remote_consistent_lsn)) }
        case LAYERGATE__V1__RESPONSE__BODY_CREATE_TENANT:
            out.body = .createTenant(CreateTenantResponse())
        case LAYERGATE__V1__RESPONSE__BODY_TENANT_STATUS:
            if let p = r.tenant_status?.pointee {
                out.body = .tenantStatus(TenantStatusResponse(
                    tenantId: CRead.string(p.tenant_id), state: CRead.string(p.state), lastRecordLsn: p.last_record_lsn,
                    diskConsistentLsn: p.disk_consistent_lsn, generation: p.generation,
                    layers: CRead.array(p.layers, p.n_layers) {
                        LayerInfo(name: CRead.string($0.name), isImage: $0.is_image != 0, lsnStart: $0.lsn_start,
                                  lsnEnd: $0.lsn_end, size: $0.size)
                    },
                    compactionFailures: p.compaction_failures, lastCompactionError: CRead.string(p.last_compaction_error),
                    flushFailures: p.flush_failures, lastFlushError: CRead.string(p.last_flush_error),
                    walTailCuts: p.wal_tail_cuts, lastWalTailCut: CRead.string(p.last_wal_tail_cut),
                    remoteConsistentLsn: p.remote_consistent_lsn, layersPendingUpload: p.layers_pending_upload,
                    remoteUploadError: CRead.string(p.remote_upload_error)))
            }
        case LAYERGATE__V1__RESPONSE__BODY_LIST_TENANTS:
            if let p = r.list_tenants?.pointee {
                let ids = (0..<p.n_tenant_ids).map { CRead.string(p.tenant_ids[$0]) }
                out.body = .listTenants(ListTenantsResponse(tenantIds: ids))
            }
        case LAYERGATE__V1__RESPONSE__BODY_SERVER_STATUS:
            if let p = r.server_status?.pointee {
                out.body = .serverStatus(ServerStatusResponse(
                    pageCacheCapacity: p.page_cache_capacity, pageCacheHits: p.page_cache_hits,
                    pageCacheMisses: p.page_cache_misses, requests: p.requests, connections: p.connections,
                    version: CRead.string(p.version)))
            }
        case LAYERGATE__V1__RESPONSE__BODY_CONFIGURE_FAILPOINTS:
            out.body = .configureFailpoints(ConfigureFailpointsResponse())
        default:
            break
        }
        return out
    }

    public static func decodeRequest(_ bytes: [UInt8]) throws(DecodeError) -> Request {
        try bytes.withUnsafeBytes { b in Result { () throws(DecodeError) in try decodeRequest(b) } }.get()
    }

    public static func decodeResponse(_ bytes: [UInt8]) throws(DecodeError) -> Response {
        try bytes.withUnsafeBytes { b in Result { () throws(DecodeError) in try decodeResponse(b) } }.get()
    }

    // MARK: Shared pieces

    private static func pageKey(_ k: PageKey, _ a: CArena) -> UnsafeMutablePointer<Layergate__V1__PageKey> {
        let p = a.message(Layergate__V1__PageKey.self) { layergate__v1__page_key__init($0) }
        p.pointee.spc_oid = k.spcOid
        p.pointee.db_oid = k.dbOid
        p.pointee.rel_number = k.relNumber
        p.pointee.fork = k.fork
        p.pointee.block = k.block
        return p
    }

    private static func pageKey(_ k: Layergate__V1__PageKey) -> PageKey {
        PageKey(spcOid: k.spc_oid, dbOid: k.db_oid, relNumber: k.rel_number, fork: k.fork, block: k.block)
    }

    private static func record(_ r: Record, _ a: CArena) -> UnsafeMutablePointer<Layergate__V1__Record> {
        let p = a.message(Layergate__V1__Record.self) { layergate__v1__record__init($0) }
        p.pointee.key = r.key.map { pageKey($0, a) }
        p.pointee.lsn = r.lsn
        switch r.value {
        case nil:
            p.pointee.value_case = LAYERGATE__V1__RECORD__VALUE__NOT_SET
        case .image(let bytes)?:
            p.pointee.value_case = LAYERGATE__V1__RECORD__VALUE_IMAGE
            p.pointee.image = a.bytes(bytes)
        case .delta(let d)?:
            let dp = a.message(Layergate__V1__DeltaRecord.self) { layergate__v1__delta_record__init($0) }
            dp.pointee.will_init = d.willInit ? 1 : 0
            let list = a.pointers(to: Layergate__V1__Patch.self, count: d.patches.count)
            for (i, patch) in d.patches.enumerated() {
                let pp = a.message(Layergate__V1__Patch.self) { layergate__v1__patch__init($0) }
                pp.pointee.offset = patch.offset
                pp.pointee.data = a.bytes(patch.data)
                list[i] = pp
            }
            dp.pointee.n_patches = d.patches.count
            dp.pointee.patches = list
            p.pointee.value_case = LAYERGATE__V1__RECORD__VALUE_DELTA
            p.pointee.delta = dp
        }
        return p
    }

    private static func record(_ r: Layergate__V1__Record) -> Record {
        var value: Record.Value?
        switch r.value_case {
        case LAYERGATE__V1__RECORD__VALUE_IMAGE:
            value = .image(CRead.bytes(r.image))
        case LAYERGATE__V1__RECORD__VALUE_DELTA:
            if let d = r.delta?.pointee {
                value = .delta(DeltaRecord(willInit: d.will_init != 0, patches: CRead.array(d.patches, d.n_patches) {
                    Patch(offset: $0.offset, data: CRead.bytes($0.data))
                }))
            }
        default:
            value = nil
        }
        return Record(key: r.key.map { pageKey($0.pointee) }, lsn: r.lsn, value: value)
    }
}
