import LayerGateAuth
import LayerGateStorage
import LayerGateWire
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of a connection (SO_PEERCRED).
public struct PeerIdentity: Sendable, Equatable {
    public var uid: UInt32
    public var pid: Int32
}

/// Turns one request into one response: who may do it, validation of what
/// came off the socket, the storage call, and errors as wire codes. Nothing
/// a client sends can crash it.
public final class Dispatcher: Sendable {
    /// What a status reader should know about the remote copy: empty while it keeps up.
    static func uploadProblem(_ r: RemoteStatus, generation: UInt32) -> String {
        if let other = r.fencedByGeneration {
            let who = other > generation
                ? "a newer generation (\(other)) writes this tenant's remote copy"
                : "another server writes this tenant's remote copy with generation \(other), at or above this server's"
            return who + "; this server stopped uploading for good (it serves what it has). To make it the owner again: remove the tenant's directory here with the server stopped, then attach with a higher generation"
        }
        return r.lastUploadError.map { "\(r.uploadFailures) failed upload passes; last: \($0)" } ?? ""
    }

    let manager: TenantManager
    let config: ServerConfig
    let failpoints: Failpoints
    /// Set when the server checks tokens (`--auth-public-key`).
    let verifier: TokenVerifier?
    let metrics: RequestMetrics
    private let damage: DamageLog
    let requestCount = Atomic<UInt64>(0)
    let connectionCount = Atomic<Int>(0)
    private let serverUid = getuid()

    public init(manager: TenantManager, config: ServerConfig, failpoints: Failpoints, verifier: TokenVerifier? = nil,
                metrics: RequestMetrics = RequestMetrics(), logger: Logger = Logger(label: "layergated")) {
        damage = DamageLog(logger: logger)
        self.manager = manager
        self.config = config
        self.failpoints = failpoints
        self.verifier = verifier
        self.metrics = metrics
    }

    /// `grant` is nil when the server does not check tokens; otherwise the
    /// verification of the request's token.
    /// `order`: a PutRecords' place among its connection's puts (`PutTurn`); the caller passes its turn on every path.
    public func handle(_ request: Wire.Request, grant: Result<Grant, TokenError>?, peer: PeerIdentity,
                       order: (after: PutTurn?, turn: PutTurn)? = nil) async -> Wire.Response {
        let start = NIODeadline.now()
        requestCount.add(1, ordering: .relaxed)
        let body: Wire.Response.Body
        if let denied = authorize(request, grant: grant, peer: peer) {
            body = .error(denied)
        } else {
            do throws(StorageError) {
                body = try await respond(to: request, peer: peer, order: order)
            } catch {
                body = failure(error)
            }
        }
        metrics.finished(RequestMetrics.Kind(request.body), body, since: start)
        return Wire.Response(requestId: request.requestId, body: body)
    }

    /// What `handleInline` answered.
    public enum InlineAnswer: Sendable {
        /// The page's answer, as a whole frame, was appended to the buffer.
        case frame
        /// The page's answer was appended but for its page, an in-memory image
        /// that the transport sends from where it is (`ImageShare`).
        case frameSharing(SharedPage)
        /// An answer that is not a page (an error).
        case response(Wire.Response)
        /// A permitted GetPage whose blocks are not all cached: read them
        /// (`DiskRead.miss`) and `readWithoutWaiting` it again, or `readFromDisk` it on a read thread.
        case disk(DiskRead)
    }

    /// A page left out of its frame: it goes before the frame's last `bytesAfterPage` bytes.
    public struct SharedPage: Sendable {
        let image: [UInt8]
        let bytesAfterPage: Int
    }

    /// A GetPage that was allowed, and needs the disk.
    public struct DiskRead: Sendable {
        let requestId: UInt64
        let tenant: Tenant
        let key: PageKey
        let lsn: Lsn?
        let started: NIODeadline
        /// The layer-file blocks it lacked (nil: not known, as for a layer not downloaded).
        let miss: BlockMiss?
    }

    /// Answers `read` again without waiting, once the blocks it lacked are in
    /// the page cache: `.disk` again, naming the next blocks, when it needs
    /// more (an index block first, then the page's). `sharing` as for `handleInline`.
    public func readWithoutWaiting(_ read: DiskRead, sharing: Bool, into out: inout ByteBuffer) -> InlineAnswer? {
        do throws(StorageError) {
            let written = try writeWithoutWaiting(requestId: read.requestId, tenant: read.tenant, key: read.key, lsn: read.lsn,
                                                  started: read.started, sharing: sharing, into: &out)
            if case .disk = written { return written }
            countPagesAnswered(1, since: read.started)
            return written
        } catch {
            return answer(read.requestId, failure(error), since: read.started)
        }
    }

    /// Writes the page's answer frame into `out` when none of its blocks needs
    /// the disk (nil), else names the read to make, with the blocks it lacked:
    /// the one no-wait page read of a cache hit and of a kernel read's retry.
    /// `.frame`, `.frameSharing` (an in-memory image left out, with
    /// `sharing`) or `.disk`; not counted here.
    private func writeWithoutWaiting(requestId: UInt64, tenant: Tenant, key: PageKey, lsn: Lsn?, started: NIODeadline,
                                     sharing: Bool, into out: inout ByteBuffer) throws(StorageError) -> InlineAnswer {
        var miss: BlockMiss?
        var share = ImageShare(allowed: sharing)
        let written = try Wire.writePageFrame(requestId: requestId, pageSize: pageSize, into: &out) {
            page throws(StorageError) -> Wire.FilledPage? in
            try tenant.getPageWithoutWaiting(key: key, lsn: lsn, into: page, miss: &miss, share: &share)
                .map { Wire.FilledPage(lsn: $0.rawValue, wrote: share.image == nil) }
        }
        switch written {
        case .whole?: return .frame
        case .pageLeftOut(let after)?:
            guard let image = share.image else { preconditionFailure("a page left out of its frame with nothing to send in its place") }
            return .frameSharing(SharedPage(image: image, bytesAfterPage: after))
        case nil: return .disk(DiskRead(requestId: requestId, tenant: tenant, key: key, lsn: lsn, started: started, miss: miss))
        }
    }

    /// Answers `read` into `out`, reading the disk: call it on a read thread
    /// (`ReadThreads.shared`). Nil when its LSN is not ingested yet: then it
    /// goes through `handle` on a task, which waits.
    public func readFromDisk(_ read: DiskRead, into out: inout ByteBuffer) -> InlineAnswer? {
        do throws(StorageError) {
            let wrote = try Wire.writePageFrame(requestId: read.requestId, pageSize: pageSize, into: &out) {
                page throws(StorageError) -> UInt64? in
                try read.tenant.getPageFromDisk(key: read.key, lsn: read.lsn, into: page)?.rawValue
            }
            guard wrote else { return nil }
            return answered(since: read.started)
        } catch {
            return answer(read.requestId, failure(error), since: read.started)
        }
    }

    /// Answers a GetPage at once, on the calling thread (the event loop), when
    /// it needs no disk read and no wait; `.disk` when it needs the disk; nil
    /// for everything else, which goes through `handle` on its own task. Cache
    /// hits skip two thread hand-offs, and the page is built straight into
    /// `out`, the answer's frame. A `.frame` answer is not counted here: the
    /// caller counts it with `countPagesAnswered`. `start` is when the loop took
    /// the request's bytes (one clock reading per pass over a connection's frames).
    /// With `sharing`, a page that is an in-memory image as it is comes back
    /// as `.frameSharing`, for a transport that sends it from where it is.
    public func handleInline(_ request: Wire.Request, grant: Result<Grant, TokenError>?, peer: PeerIdentity,
                             since start: NIODeadline, sharing: Bool = false, into out: inout ByteBuffer) -> InlineAnswer? {
        guard case .getPage(let r)? = request.body, let k = r.key else { return nil }
        if let denied = authorize(request, grant: grant, peer: peer) {
            return answer(request.requestId, .error(denied), since: start)
        }
        return inlinePage(requestId: request.requestId, since: start, sharing: sharing, into: &out) { () throws(StorageError) in
            (try tenant(r.tenantId), k, r.latest ? nil : r.lsn)
        }
    }

    /// What a connection's token lets it read, worked out once per token, so
    /// that a GetPage read in place is checked without touching the grant.
    public enum ReadRight: Sendable, Equatable {
        case everyTenant
        case tenant(high: UInt64, low: UInt64)
        /// Nothing, or not known to be allowed: `authorize` decides and words the refusal.
        case refused
    }

    /// `grant` as a `ReadRight` (nil, no tokens checked: anyone may read).
    public static func readRight(_ grant: Result<Grant, TokenError>?) -> ReadRight {
        guard let grant else { return .everyTenant }
        guard case .success(let ok) = grant else { return .refused }
        if ok.scope == .admin { return .everyTenant }
        guard let text = ok.tenant, let id = try? TenantId(parsing: text) else { return .refused }
        return .tenant(high: id.high, low: id.low)
    }

    /// The same for a GetPage read in place (`Wire.readGetPageInPlace`): no
    /// request is built unless it is refused or not a cache hit. `right` is
    /// `readRight(grant)`; `grant` is evaluated only to word a refusal.
    public func handleInline(_ g: Wire.InPlaceGetPage, right: ReadRight, grant: @autoclosure () -> Result<Grant, TokenError>?,
                             peer: PeerIdentity, since start: NIODeadline, sharing: Bool = false,
                             into out: inout ByteBuffer) -> InlineAnswer? {
        let allowed: Bool
        switch right {
        case .everyTenant: allowed = true
        case .tenant(let high, let low): allowed = high == g.tenantHigh && low == g.tenantLow
        case .refused: allowed = false
        }
        if !allowed {
            // Refused whatever `grant` says: nil (no tokens checked) would let `authorize` allow the read.
            let denied = authorize(g.request(authToken: ""), grant: grant(), peer: peer)
                ?? Wire.Error(code: .permissionDenied, message: "the token does not cover tenant \(g.tenantId)")
            return answer(g.requestId, .error(denied), since: start)
        }
        return inlinePage(requestId: g.requestId, since: start, sharing: sharing, into: &out) { () throws(StorageError) in
            (try manager.tenant(TenantId(high: g.tenantHigh, low: g.tenantLow)), g.key, g.latest ? nil : g.lsn)
        }
    }

    /// Writes the page's answer frame into `out` when the page is cached, else
    /// answers `.disk`; `target` names the tenant, key and LSN (nil: latest), or why not.
    private func inlinePage(requestId: UInt64, since start: NIODeadline, sharing: Bool, into out: inout ByteBuffer,
                            _ target: () throws(StorageError) -> (Tenant, Wire.PageKey, UInt64?)) -> InlineAnswer? {
        do throws(StorageError) {
            let (t, k, lsn) = try target()
            // A page is counted by the caller, with the pass's other answers (`countPagesAnswered`).
            return try writeWithoutWaiting(requestId: requestId, tenant: t, key: try Self.pageKey(k), lsn: lsn.map(Lsn.init),
                                           started: start, sharing: sharing, into: &out)
        } catch {
            return answer(requestId, failure(error), since: start)
        }
    }

    /// A storage error as the answer's body; an INTERNAL one is also told to the operator (`DamageLog`).
    private func failure(_ error: StorageError) -> Wire.Response.Body {
        let wire = ErrorMapping.wire(error)
        if wire.code == .internal { damage.note(wire.message) }
        return .error(wire)
    }

    /// A GetPage answered with its page.
    private func answered(since start: NIODeadline) -> InlineAnswer {
        countPagesAnswered(1, since: start)
        return .frame
    }

    /// Counts `count` GetPages answered with their page since `start`: a
    /// disk read's, or the `.frame` answers of `handleInline` in one pass.
    func countPagesAnswered(_ count: Int, since start: NIODeadline) {
        requestCount.add(UInt64(count), ordering: .relaxed)
        metrics.answeredGetPages(count, since: start)
    }

    /// A GetPage answered with an error.
    private func answer(_ requestId: UInt64, _ body: Wire.Response.Body, since start: NIODeadline) -> InlineAnswer {
        requestCount.add(1, ordering: .relaxed)
        metrics.finished(.getPage, body, since: start)
        return .response(Wire.Response(requestId: requestId, body: body))
    }

    // MARK: who may do what

    /// What a request needs: to read a tenant, to write it, or admin rights.
    enum Need: Equatable {
        case read(String)
        case write(String)
        case admin
    }

    static func need(_ body: Wire.Request.Body?) -> Need {
        switch body {
        case .getPage(let r)?: return .read(r.tenantId)
        case .tenantStatus(let r)?: return .read(r.tenantId)
        case .putRecords(let r)?: return .write(r.tenantId)
        default: return .admin
        }
    }

    /// nil when the request may run; else the error to answer with.
    /// With tokens: UNAUTHENTICATED for a missing, malformed, badly signed or
    /// expired one, PERMISSION_DENIED for a valid one of the wrong scope or
    /// tenant. Without: the peer's uid (SO_PEERCRED) — the server's or root
    /// may write pages and run admin requests; everyone who can connect may read.
    /// A grant's expiry was checked where it came from (the connection's
    /// `TokenCache`, or the verifier for a token it had not seen).
    func authorize(_ request: Wire.Request, grant: Result<Grant, TokenError>?, peer: PeerIdentity) -> Wire.Error? {
        guard request.body != nil else { return nil }  // answered INVALID_ARGUMENT by respond
        let need = Self.need(request.body)
        guard let grant else {
            if case .read = need { return nil }
            guard isServerUser(peer) else {
                return Wire.Error(code: .permissionDenied,
                                  message: "\(Self.name(of: request.body)) needs the server's uid (\(serverUid)) or root")
            }
            return nil
        }
        let g: Grant
        switch grant {
        case .failure(let e): return Wire.Error(code: .unauthenticated, message: "\(e)")
        case .success(let ok): g = ok
        }
        switch (g.scope, need) {
        case (.admin, _): return nil
        case (.tenant, .read(let t)), (.ingest, .read(let t)), (.ingest, .write(let t)):
            if let mine = g.tenant, Self.sameHexIgnoringCase(t, mine) { return nil }
            return Wire.Error(code: .permissionDenied, message: "the token is for tenant \(g.tenant ?? "?"), not this one")
        default:
            return Wire.Error(code: .permissionDenied,
                              message: "\(Self.name(of: request.body)) needs a token of scope \(need.scope), this one is \(g.scope.rawValue)")
        }
    }

    /// Tenant ids compared as hex digits in either case, without building a
    /// lowercased copy on every request.
    static func sameHexIgnoringCase(_ a: String, _ b: String) -> Bool {
        if a == b { return true }  // the usual case: both lowercase, one memcmp
        return a.utf8.count == b.utf8.count
            && zip(a.utf8, b.utf8).allSatisfy { x, y in x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= 0x61 && (x | 0x20) <= 0x66) }
    }

    func isServerUser(_ peer: PeerIdentity) -> Bool { peer.uid == serverUid || peer.uid == 0 }

    static func name(of body: Wire.Request.Body?) -> String {
        guard let body else { return "a request" }
        return String(describing: body).prefix { $0 != "(" }.description
    }

    private func tenant(_ text: String) throws(StorageError) -> Tenant {
        try manager.tenant(TenantId(parsing: text))
    }

    private func respond(to request: Wire.Request, peer: PeerIdentity,
                         order: (after: PutTurn?, turn: PutTurn)?) async throws(StorageError) -> Wire.Response.Body {
        guard let body = request.body else { throw .invalidArgument("a Request needs a body") }
        switch body {
        case .getPage(let r):
            let t = try tenant(r.tenantId)
            guard let k = r.key else { throw .invalidArgument("GetPage needs a key") }
            let key = try Self.pageKey(k)
            let wait: Duration? = r.waitMs == 0 ? nil : min(.milliseconds(Int(r.waitMs)), config.limits.maxWaitLsn)
            let (page, lsn) = try await t.getPage(key: key, lsn: r.latest ? nil : Lsn(r.lsn), waitTimeout: wait)
            return .getPage(Wire.GetPageResponse(page: page, lsn: lsn.rawValue))
        case .putRecords(let r):
            let t = try tenant(r.tenantId)
            var records: [Record] = []
            records.reserveCapacity(r.records.count)
            for w in r.records { records.append(try Self.record(w)) }
            let lsn = try await t.put(records, after: order?.after, turn: order?.turn)
            return .putRecords(Wire.PutRecordsResponse(lastRecordLsn: lsn.rawValue))
        case .compact(let r):
            let result = try await tenant(r.tenantId).compact(forceImageLayers: r.forceImageLayers)
            return .compact(Wire.CompactResponse(layersCreated: UInt32(result.layersCreated),
                                                 layersRemoved: UInt32(result.layersRemoved),
                                                 bytesWritten: UInt64(result.bytesWritten)))
        case .resetTenant(let r):
            let result = try await tenant(r.tenantId).reset(dropCache: r.dropCache)
            return .resetTenant(Wire.ResetTenantResponse(generation: UInt64(result.generation),
                                                         filesSwept: UInt32(result.filesSwept)))
        case .attachTenant(let r):
            guard let generation = UInt32(exactly: r.generation) else {
                throw .invalidArgument("AttachTenant: generation \(r.generation) is above 4294967295")
            }
            let (t, layers) = try await manager.attach(TenantId(parsing: r.tenantId), generation: generation)
            return .attachTenant(Wire.AttachTenantResponse(generation: UInt64(t.status().generation), layers: UInt32(clamping: layers)))
        case .detachTenant(let r):
            let lsn = try await manager.detach(TenantId(parsing: r.tenantId))
            return .detachTenant(Wire.DetachTenantResponse(remoteConsistentLsn: lsn.rawValue))
        case .createTenant(let r):
            _ = try await manager.create(TenantId(parsing: r.tenantId))
            return .createTenant(Wire.CreateTenantResponse())
        case .tenantStatus(let r):
            let s = try tenant(r.tenantId).status()
            return .tenantStatus(Wire.TenantStatusResponse(
                tenantId: s.tenantId.description, state: s.state.name, lastRecordLsn: s.lastRecordLsn.rawValue,
                diskConsistentLsn: s.diskConsistentLsn.rawValue, generation: UInt64(s.generation),
                layers: s.layers.map {
                    Wire.LayerInfo(name: $0.name, isImage: $0.isImage, lsnStart: $0.lsnStart.rawValue,
                                   lsnEnd: $0.lsnEnd.rawValue, size: UInt64($0.size))
                },
                compactionFailures: UInt32(clamping: s.compactionFailures), lastCompactionError: s.lastCompactionError ?? "",
                flushFailures: UInt32(clamping: s.flushFailures), lastFlushError: s.lastFlushError ?? "",
                walTailCuts: UInt32(clamping: s.walTailCuts), lastWalTailCut: s.lastWalTailCut ?? "",
                remoteConsistentLsn: s.remote?.remoteConsistentLsn?.rawValue ?? 0,
                layersPendingUpload: UInt32(clamping: s.remote?.layersPendingUpload ?? 0),
                remoteUploadError: s.remote.map { Self.uploadProblem($0, generation: s.generation) } ?? ""))
        case .listTenants:
            return .listTenants(Wire.ListTenantsResponse(tenantIds: manager.tenantIds.map(\.description)))
        case .serverStatus:
            let c = manager.cache.stats
            return .serverStatus(Wire.ServerStatusResponse(
                pageCacheCapacity: UInt64(c.capacity), pageCacheHits: c.hits, pageCacheMisses: c.misses,
                requests: requestCount.load(ordering: .relaxed),
                connections: UInt32(clamping: connectionCount.load(ordering: .relaxed)), version: ServerConfig.version))
        case .configureFailpoints(let r):
            guard config.enableFailpoints else {
                return .error(Wire.Error(code: .permissionDenied, message: "failpoints are off: start the server with --enable-failpoints"))
            }
            // Check all first, so a bad entry changes nothing.
            let parsed = try r.failpoints.map { f throws(StorageError) -> (String, Failpoints.Action) in
                guard Failpoints.known.contains(f.name) else { throw .invalidArgument("unknown failpoint '\(f.name)'") }
                return (f.name, try Failpoints.Action(parsing: f.action))
            }
            for (name, action) in parsed { try failpoints.configure(name, action) }
            return .configureFailpoints(Wire.ConfigureFailpointsResponse())
        }
    }

    static func pageKey(_ k: Wire.PageKey) throws(StorageError) -> PageKey {
        try PageKey(spcOid: k.spcOid, dbOid: k.dbOid, relNumber: k.relNumber, wireFork: k.fork, block: k.block)
    }

    static func record(_ w: Wire.Record) throws(StorageError) -> Record {
        guard let k = w.key else { throw .invalidArgument("record at LSN \(w.lsn) has no key") }
        let key = try pageKey(k)
        switch w.value {
        case nil:
            throw .invalidArgument("record for \(key) at LSN \(w.lsn) has neither image nor delta")
        case .image(let bytes)?:
            return Record(key: key, lsn: Lsn(w.lsn), value: .image(bytes))
        case .delta(let d)?:
            return Record(key: key, lsn: Lsn(w.lsn), value: .delta(Delta(
                willInit: d.willInit, patches: d.patches.map { Patch(offset: Int($0.offset), data: $0.data) })))
        }
    }
}

extension Dispatcher.Need {
    var scope: String {
        switch self {
        case .read: return "tenant, ingest or admin"
        case .write: return "ingest or admin"
        case .admin: return "admin"
        }
    }
}
