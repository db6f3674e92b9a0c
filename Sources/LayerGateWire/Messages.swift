/// Swift values for every message of `Protocol/layergate.proto`
/// (package layergate.v1). Field names follow the proto's, in Swift case.
/// These know nothing of files or storage; `ProtobufCCodec` converts them.
public enum Wire {
    public struct PageKey: Hashable, Sendable {
        public var spcOid: UInt32, dbOid: UInt32, relNumber: UInt32, fork: UInt32, block: UInt32
        public init(spcOid: UInt32, dbOid: UInt32, relNumber: UInt32, fork: UInt32, block: UInt32) {
            (self.spcOid, self.dbOid, self.relNumber, self.fork, self.block) = (spcOid, dbOid, relNumber, fork, block)
        }
    }

    public struct Patch: Hashable, Sendable {
        public var offset: UInt32
        public var data: [UInt8]
        public init(offset: UInt32, data: [UInt8]) { (self.offset, self.data) = (offset, data) }
    }

    public struct DeltaRecord: Hashable, Sendable {
        public var willInit: Bool
        public var patches: [Patch]
        public init(willInit: Bool, patches: [Patch]) { (self.willInit, self.patches) = (willInit, patches) }
    }

    public struct Record: Hashable, Sendable {
        public enum Value: Hashable, Sendable {
            case image([UInt8])
            case delta(DeltaRecord)
        }
        /// nil when the sender left the key out (the server rejects that).
        public var key: PageKey?
        public var lsn: UInt64
        /// nil when neither `image` nor `delta` is set.
        public var value: Value?
        public init(key: PageKey?, lsn: UInt64, value: Value?) { (self.key, self.lsn, self.value) = (key, lsn, value) }
    }

    public struct GetPageRequest: Hashable, Sendable {
        public var tenantId: String
        public var key: PageKey?
        public var lsn: UInt64
        public var latest: Bool
        public var waitMs: UInt32
        public init(tenantId: String, key: PageKey?, lsn: UInt64 = 0, latest: Bool = false, waitMs: UInt32 = 0) {
            (self.tenantId, self.key, self.lsn, self.latest, self.waitMs) = (tenantId, key, lsn, latest, waitMs)
        }
    }

    /// The size of every page the protocol carries.
    public static let pageBytes = 8192

    public struct GetPageResponse: Hashable, Sendable {
        public var page: [UInt8]
        /// The LSN the page was read at.
        public var lsn: UInt64
        public init(page: [UInt8], lsn: UInt64) { (self.page, self.lsn) = (page, lsn) }
    }

    public struct PutRecordsRequest: Hashable, Sendable {
        public var tenantId: String
        public var records: [Record]
        public init(tenantId: String, records: [Record]) { (self.tenantId, self.records) = (tenantId, records) }
    }

    public struct PutRecordsResponse: Hashable, Sendable {
        /// Durable when this arrives.
        public var lastRecordLsn: UInt64
        public init(lastRecordLsn: UInt64) { self.lastRecordLsn = lastRecordLsn }
    }

    public struct CompactRequest: Hashable, Sendable {
        public var tenantId: String
        public var forceImageLayers: Bool
        public init(tenantId: String, forceImageLayers: Bool = false) {
            (self.tenantId, self.forceImageLayers) = (tenantId, forceImageLayers)
        }
    }

    public struct CompactResponse: Hashable, Sendable {
        public var layersCreated: UInt32, layersRemoved: UInt32, bytesWritten: UInt64
        public init(layersCreated: UInt32, layersRemoved: UInt32, bytesWritten: UInt64) {
            (self.layersCreated, self.layersRemoved, self.bytesWritten) = (layersCreated, layersRemoved, bytesWritten)
        }
    }

    public struct ResetTenantRequest: Hashable, Sendable {
        public var tenantId: String
        public var dropCache: Bool
        public init(tenantId: String, dropCache: Bool = false) { (self.tenantId, self.dropCache) = (tenantId, dropCache) }
    }

    public struct ResetTenantResponse: Hashable, Sendable {
        public var generation: UInt64
        public var filesSwept: UInt32
        public init(generation: UInt64, filesSwept: UInt32) { (self.generation, self.filesSwept) = (generation, filesSwept) }
    }

    public struct AttachTenantRequest: Hashable, Sendable {
        public var tenantId: String
        public var generation: UInt64
        public init(tenantId: String, generation: UInt64) { (self.tenantId, self.generation) = (tenantId, generation) }
    }

    public struct AttachTenantResponse: Hashable, Sendable {
        public var generation: UInt64
        public var layers: UInt32
        public init(generation: UInt64, layers: UInt32) { (self.generation, self.layers) = (generation, layers) }
    }

    public struct DetachTenantRequest: Hashable, Sendable {
        public var tenantId: String
        public init(tenantId: String) { self.tenantId = tenantId }
    }

    public struct DetachTenantResponse: Hashable, Sendable {
        public var remoteConsistentLsn: UInt64
        public init(remoteConsistentLsn: UInt64) { self.remoteConsistentLsn = remoteConsistentLsn }
    }

    public struct CreateTenantRequest: Hashable, Sendable {
        public var tenantId: String
        public init(tenantId: String) { self.tenantId = tenantId }
    }

    public struct CreateTenantResponse: Hashable, Sendable {
        public init() {}
    }

    public struct TenantStatusRequest: Hashable, Sendable {
        public var tenantId: String
        public init(tenantId: String) { self.tenantId = tenantId }
    }

    public struct LayerInfo: Hashable, Sendable {
        public var name: String
        public var isImage: Bool
        public var lsnStart: UInt64, lsnEnd: UInt64, size: UInt64
        public init(name: String, isImage: Bool, lsnStart: UInt64, lsnEnd: UInt64, size: UInt64) {
            (self.name, self.isImage, self.lsnStart, self.lsnEnd, self.size) = (name, isImage, lsnStart, lsnEnd, size)
        }
    }

    public struct TenantStatusResponse: Hashable, Sendable {
        public var tenantId: String
        /// One of loading, active, resetting, broken.
        public var state: String
        public var lastRecordLsn: UInt64, diskConsistentLsn: UInt64, generation: UInt64
        public var layers: [LayerInfo]
        public var compactionFailures: UInt32
        public var lastCompactionError: String
        /// Consecutive failed flushes of the in-memory layers (0 after a success).
        public var flushFailures: UInt32
        public var lastFlushError: String
        /// LayerGate's own (fields 100+): WAL tails cut at loads since the server started.
        public var walTailCuts: UInt32
        public var lastWalTailCut: String
        /// disk_consistent_lsn of the newest remote index stored (0: none yet, or no remote storage).
        public var remoteConsistentLsn: UInt64
        public var layersPendingUpload: UInt32
        /// LayerGate's own (field 102): why uploads fail or stopped; empty when they keep up.
        public var remoteUploadError: String
        public init(tenantId: String, state: String, lastRecordLsn: UInt64, diskConsistentLsn: UInt64, generation: UInt64,
                    layers: [LayerInfo], compactionFailures: UInt32, lastCompactionError: String,
                    flushFailures: UInt32 = 0, lastFlushError: String = "", walTailCuts: UInt32 = 0,
                    lastWalTailCut: String = "", remoteConsistentLsn: UInt64 = 0, layersPendingUpload: UInt32 = 0,
                    remoteUploadError: String = "") {
            (self.tenantId, self.state, self.lastRecordLsn, self.diskConsistentLsn, self.generation) =
                (tenantId, state, lastRecordLsn, diskConsistentLsn, generation)
            (self.layers, self.compactionFailures, self.lastCompactionError) = (layers, compactionFailures, lastCompactionError)
            (self.flushFailures, self.lastFlushError) = (flushFailures, lastFlushError)
            (self.walTailCuts, self.lastWalTailCut) = (walTailCuts, lastWalTailCut)
            (self.remoteConsistentLsn, self.layersPendingUpload, self.remoteUploadError) =
                (remoteConsistentLsn, layersPendingUpload, remoteUploadError)
        }
    }

    public struct ListTenantsRequest: Hashable, Sendable {
        public init() {}
    }

    public struct ListTenantsResponse: Hashable, Sendable {
        public var tenantIds: [String]
        public init(tenantIds: [String]) { self.tenantIds = tenantIds }
    }

    public struct ServerStatusRequest: Hashable, Sendable {
        public init() {}
    }

    public struct ServerStatusResponse: Hashable, Sendable {
        /// In 8 KiB pages.
        public var pageCacheCapacity: UInt64, pageCacheHits: UInt64, pageCacheMisses: UInt64, requests: UInt64
        public var connections: UInt32
        public var version: String
        public init(pageCacheCapacity: UInt64, pageCacheHits: UInt64, pageCacheMisses: UInt64, requests: UInt64,
                    connections: UInt32, version: String) {
            (self.pageCacheCapacity, self.pageCacheHits, self.pageCacheMisses, self.requests) =
                (pageCacheCapacity, pageCacheHits, pageCacheMisses, requests)
            (self.connections, self.version) = (connections, version)
        }
    }

    public struct Failpoint: Hashable, Sendable {
        public var name: String
        /// "off", "return", "exit", "sleep(MS)", "pause".
        public var action: String
        public init(name: String, action: String) { (self.name, self.action) = (name, action) }
    }

    public struct ConfigureFailpointsRequest: Hashable, Sendable {
        public var failpoints: [Failpoint]
        public init(failpoints: [Failpoint]) { self.failpoints = failpoints }
    }

    public struct ConfigureFailpointsResponse: Hashable, Sendable {
        public init() {}
    }

    /// The wire's error codes. proto3 enums are open: a code this build does not
    /// know arrives as `.unknown(raw)` and goes out again as the same number.
    public enum ErrorCode: Hashable, Sendable {
        case unspecified, invalidArgument, tenantNotFound, pageNotFound, lsnNotAvailable, tenantUnavailable
        case layerExists, permissionDenied, frameTooLarge, `internal`, tenantExists, lsnBelowGcHorizon
        /// A server limit or a full disk: nothing was stored; retry later.
        case resourceExhausted
        /// Authentication is on and the token is missing, malformed, badly signed or expired.
        case unauthenticated
        case unknown(Int32)

        static let known: [ErrorCode] = [
            .unspecified, .invalidArgument, .tenantNotFound, .pageNotFound, .lsnNotAvailable, .tenantUnavailable,
            .layerExists, .permissionDenied, .frameTooLarge, .internal, .tenantExists, .lsnBelowGcHorizon,
            .resourceExhausted, .unauthenticated,
        ]

        public init(rawValue: Int32) {
            self = rawValue >= 0 && Int(rawValue) < Self.known.count ? Self.known[Int(rawValue)] : .unknown(rawValue)
        }

        public var rawValue: Int32 {
            if case .unknown(let v) = self { return v }
            return Int32(Self.known.firstIndex(of: self)!)
        }

        /// The proto name, as clients in other languages print it.
        public var name: String {
            switch self {
            case .unspecified: return "ERROR_CODE_UNSPECIFIED"
            case .invalidArgument: return "INVALID_ARGUMENT"
            case .tenantNotFound: return "TENANT_NOT_FOUND"
            case .pageNotFound: return "PAGE_NOT_FOUND"
            case .lsnNotAvailable: return "LSN_NOT_AVAILABLE"
            case .tenantUnavailable: return "TENANT_UNAVAILABLE"
            case .layerExists: return "LAYER_EXISTS"
            case .permissionDenied: return "PERMISSION_DENIED"
            case .frameTooLarge: return "FRAME_TOO_LARGE"
            case .internal: return "INTERNAL"
            case .tenantExists: return "TENANT_EXISTS"
            case .lsnBelowGcHorizon: return "LSN_BELOW_GC_HORIZON"
            case .resourceExhausted: return "RESOURCE_EXHAUSTED"
            case .unauthenticated: return "UNAUTHENTICATED"
            case .unknown(let v): return "ERROR_CODE_\(v)"
            }
        }
    }

    public struct Error: Hashable, Sendable, Swift.Error {
        public var code: ErrorCode
        public var message: String
        public init(code: ErrorCode, message: String) { (self.code, self.message) = (code, message) }
    }

    public struct Request: Hashable, Sendable {
        public enum Body: Hashable, Sendable {
            case getPage(GetPageRequest)
            case putRecords(PutRecordsRequest)
            case compact(CompactRequest)
            case resetTenant(ResetTenantRequest)
            case createTenant(CreateTenantRequest)
            case tenantStatus(TenantStatusRequest)
            case listTenants(ListTenantsRequest)
            case serverStatus(ServerStatusRequest)
            case configureFailpoints(ConfigureFailpointsRequest)
            case attachTenant(AttachTenantRequest)
            case detachTenant(DetachTenantRequest)
        }
        public var requestId: UInt64
        public var authToken: String
        /// nil for a Request without a body (answered with INVALID_ARGUMENT).
        public var body: Body?
        public init(requestId: UInt64, authToken: String = "", body: Body?) {
            (self.requestId, self.authToken, self.body) = (requestId, authToken, body)
        }
    }

    public struct Response: Hashable, Sendable {
        public enum Body: Hashable, Sendable {
            case error(Error)
            case getPage(GetPageResponse)
            case putRecords(PutRecordsResponse)
            case compact(CompactResponse)
            case resetTenant(ResetTenantResponse)
            case createTenant(CreateTenantResponse)
            case tenantStatus(TenantStatusResponse)
            case listTenants(ListTenantsResponse)
            case serverStatus(ServerStatusResponse)
            case configureFailpoints(ConfigureFailpointsResponse)
            case attachTenant(AttachTenantResponse)
            case detachTenant(DetachTenantResponse)
        }
        public var requestId: UInt64
        public var body: Body?
        public init(requestId: UInt64, body: Body?) { (self.requestId, self.body) = (requestId, body) }
    }
}
