#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// All tenants under `<data-dir>/tenants/`, one directory each.
public final class TenantManager: Sendable {
    public let dataDirectory: String
    public let config: TenantConfig
    public let cache: PageCache
    let failpoints: Failpoints
    let logger: Logger
    private let tenants = Mutex<[TenantId: Tenant]>([:])
    private let creating = Mutex<Set<TenantId>>([])

    var tenantsDirectory: String { dataDirectory + "/tenants" }

    public init(
        dataDirectory: String, config: TenantConfig = TenantConfig(), cache: PageCache, failpoints: Failpoints = .shared,
        logger: Logger = Logger(label: "layergate.storage")
    ) throws(StorageError) {
        self.dataDirectory = dataDirectory
        self.config = config
        self.cache = cache
        self.failpoints = failpoints
        self.logger = logger
        try Directory.createAll(dataDirectory + "/tenants")
    }

    public func directory(of id: TenantId) -> String { tenantsDirectory + "/" + id.description }

    /// Opens every tenant directory (a tenant that fails to load is kept, broken).
    /// Half-created tenants (`*.___temp`) are removed.
    @discardableResult
    public func loadAll() async throws(StorageError) -> [TenantId] {
        var ids: [TenantId] = []
        for name in try Directory.list(tenantsDirectory) {
            let path = tenantsDirectory + "/" + name
            if name.hasSuffix("___temp") {
                Directory.removeTree(path)
                continue
            }
            guard let id = try? TenantId(parsing: name), id.description == name, Directory.isDirectory(path) else {
                logger.warning("ignoring unexpected entry in the tenants directory", metadata: ["entry": "\(name)"])
                continue
            }
            let tenant = await Tenant.open(id: id, directory: path, config: config, cache: cache, failpoints: failpoints,
                                           logger: logger)
            tenants.withLock { $0[id] = tenant }
            ids.append(id)
        }
        return ids
    }

    /// Creates an empty tenant and returns it once it is active.
    public func create(_ id: TenantId) async throws(StorageError) -> Tenant {
        let claimed = creating.withLock { c in
            tenants.withLock { $0[id] == nil } && c.insert(id).inserted
        }
        guard claimed else { throw .tenantExists(id) }
        defer { _ = creating.withLock { $0.remove(id) } }
        let final = directory(of: id)
        let temp = final + ".___temp"
        guard !Directory.exists(final) else { throw .tenantExists(id) }
        let failpoints = self.failpoints
        let tenantsDirectory = self.tenantsDirectory
        try await BlockingIO.run { () throws(StorageError) in
            Directory.removeTree(temp)
            try Directory.create(temp)
            try Directory.create(temp + "/" + Tenant.walDirectoryName)
            try IndexFile(tenant: id).write(directory: temp, failpoints: failpoints)
            guard rename(temp, final) == 0 else { throw .io(operation: "rename", path: final, errno: errno) }
            Directory.fsync(tenantsDirectory)
        }
        let tenant = await Tenant.open(id: id, directory: final, config: config, cache: cache, failpoints: failpoints,
                                       logger: logger)
        tenants.withLock { $0[id] = tenant }
        if case .broken(let reason) = tenant.lifecycle { throw .tenantBroken(id, reason: reason) }
        return tenant
    }

    public func tenant(_ id: TenantId) throws(StorageError) -> Tenant {
        guard let t = tenants.withLock({ $0[id] }) else { throw .tenantNotFound(id) }
        return t
    }

    public var tenantIds: [TenantId] { tenants.withLock { $0.keys.sorted() } }

    public func shutdown() async {
        for t in tenants.withLock({ Array($0.values) }) { await t.close() }
    }
}
