import LayerGateWire

/// What each request's answer must hold, checked the same way by both clients.
extension Wire.Response {
    /// The body of an answer, or the server's error as `ClientError.server`.
    func outcome() -> Result<Body, ClientError> {
        switch body {
        case .error(let e)?: return .failure(.server(code: e.code, message: e.message))
        case let b?: return .success(b)
        case nil: return .failure(.unexpectedResponse("a response without a body"))
        }
    }
}

extension Result where Failure == ClientError {
    /// An outcome checked as one kind of answer (`getPage`, `putRecords`, …):
    /// its check's throw becomes the failure.
    func checked<T>(_ check: (Success) throws(ClientError) -> T) -> Result<T, ClientError> {
        flatMap { success in Result<T, ClientError> { () throws(ClientError) in try check(success) } }
    }
}

extension Wire.Response.Body {
    /// A page is 8 KiB (the contract): any other size is not a page.
    func getPage() throws(ClientError) -> Wire.GetPageResponse {
        guard case .getPage(let p) = self else { throw mismatch("GetPage") }
        guard p.page.count == Wire.pageBytes else { throw .pageSize(p.page.count) }
        return p
    }

    func putRecords() throws(ClientError) -> UInt64 {
        guard case .putRecords(let p) = self else { throw mismatch("PutRecords") }
        return p.lastRecordLsn
    }

    func createTenant() throws(ClientError) {
        guard case .createTenant = self else { throw mismatch("CreateTenant") }
    }

    func tenantStatus() throws(ClientError) -> Wire.TenantStatusResponse {
        guard case .tenantStatus(let p) = self else { throw mismatch("TenantStatus") }
        return p
    }

    func compact() throws(ClientError) -> Wire.CompactResponse {
        guard case .compact(let p) = self else { throw mismatch("Compact") }
        return p
    }

    func attachTenant() throws(ClientError) -> Wire.AttachTenantResponse {
        guard case .attachTenant(let p) = self else { throw mismatch("AttachTenant") }
        return p
    }

    func detachTenant() throws(ClientError) -> Wire.DetachTenantResponse {
        guard case .detachTenant(let p) = self else { throw mismatch("DetachTenant") }
        return p
    }

    func resetTenant() throws(ClientError) -> Wire.ResetTenantResponse {
        guard case .resetTenant(let p) = self else { throw mismatch("ResetTenant") }
        return p
    }

    func listTenants() throws(ClientError) -> [String] {
        guard case .listTenants(let p) = self else { throw mismatch("ListTenants") }
        return p.tenantIds
    }

    func serverStatus() throws(ClientError) -> Wire.ServerStatusResponse {
        guard case .serverStatus(let p) = self else { throw mismatch("ServerStatus") }
        return p
    }

    func configureFailpoints() throws(ClientError) {
        guard case .configureFailpoints = self else { throw mismatch("ConfigureFailpoints") }
    }

    private func mismatch(_ what: String) -> ClientError { .unexpectedResponse("the answer to \(what) has another kind of body") }
}

extension Wire.GetPageRequest {
    /// `lsn` nil: the latest version.
    init(tenant: String, key: Wire.PageKey, lsn: UInt64?, waitMs: UInt32) {
        self.init(tenantId: tenant, key: key, lsn: lsn ?? 0, latest: lsn == nil, waitMs: waitMs)
    }
}
