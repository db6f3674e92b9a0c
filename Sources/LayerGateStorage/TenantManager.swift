#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// All tenants under `<data-dir>/tenants/`, one directory each.
///
/// Everything goes through one `FileSystem` rooted at the data directory, so
/// the paths it handles (and prints) are relative to it: `tenants/<id>/…`.
public final class TenantManager: Sendable {
    /// Where the data lives, as given (for the operator's log, never for clients).
    public let dataDirectory: String
    public let config: TenantConfig
    public let storage: TenantStorage
    let logger: Logger
    private let lock: DataDirectoryLock?
    let tenantsDirectory: DirectoryHandle
    let tenants = Mutex<[TenantId: Tenant]>([:])
    let creating = Mutex<Set<TenantId>>([])
    private let shutDown = Atomic<Bool>(false)

    static let tenantsDirectoryName = "tenants"

    public var cache: PageCache { storage.cache }
    public var failpoints: Failpoints { storage.failpoints }

    /// Opens (creating it if needed, mode 0700) the data directory on the
    /// machine's filesystem and takes its lock: a second process on the same
    /// directory gets `dataDirectoryLocked`.
    public convenience init(
        dataDirectory: String, config: TenantConfig = TenantConfig(), cache: PageCache, failpoints: Failpoints = .shared,
        metrics: StorageMetrics = StorageMetrics(), remote: (any RemoteStore)? = nil,
        logger: Logger = Logger(label: "layergate.storage")
    ) throws(StorageError) {
        try Directory.createAll(RealFileSystem(), dataDirectory)
        let lock = try DataDirectoryLock(directory: dataDirectory)
        let real: RealFileSystem
        do throws(SystemError) { real = try RealFileSystem(root: dataDirectory) } catch {
            throw .io(operation: "open data directory", path: "", errno: error.errno)
        }
        // With failpoints on, `disk-full` and `no-descriptors` can fail the real disk.
        let fs: any FileSystem = failpoints.isEnabled ? FailpointFileSystem(base: real, failpoints: failpoints) : real
        try self.init(fileSystem: fs, label: dataDirectory, lock: lock, config: config, cache: cache,
                      failpoints: failpoints, metrics: metrics, remote: remote, logger: logger)
    }

    /// Serves the data directory that `fileSystem` is rooted at (tests hand in
    /// a simulated disk). Takes no lock.
    public convenience init(
        fileSystem: any FileSystem, config: TenantConfig = TenantConfig(), cache: PageCache,
        failpoints: Failpoints = .shared, metrics: StorageMetrics = StorageMetrics(), remote: (any RemoteStore)? = nil,
        logger: Logger = Logger(label: "layergate.storage")
    ) throws(StorageError) {
        try self.init(fileSystem: fileSystem, label: "(simulated)", lock: nil, config: config, cache: cache,
                      failpoints: failpoints, metrics: metrics, remote: remote, logger: logger)
    }

    private init(
        fileSystem fs: any FileSystem, label: String, lock: DataDirectoryLock?, config: TenantConfig, cache: PageCache,
        failpoints: Failpoints, metrics: StorageMetrics, remote: (any RemoteStore)?, logger: Logger
    ) throws(StorageError) {
        dataDirectory = label
        self.config = config
        self.lock = lock
        self.logger = logger
        storage = TenantStorage(
            fs: fs, root: label, openFiles: OpenFileTable(fs: fs, capacity: max(1, config.maxOpenLayerFiles),
                                                       looseLimit: config.maxLooseLayerFiles,
                                                       directReads: config.directLayerReads), cache: cache,
            budget: DiskBudget(fs: fs, reserveBytes: config.diskReserveBytes,
                               checkpointDistanceBytes: config.checkpointDistanceBytes),
            descriptors: DescriptorBudget(capacity: config.maxTenantDescriptors), failpoints: failpoints,
            metrics: metrics, remote: remote.map { store in config.maxRemoteCalls.map { BoundedRemoteStore(store, permits: $0) } ?? store })
        if !Directory.isDirectory(fs, Self.tenantsDirectoryName) {
            try Directory.create(fs, Self.tenantsDirectoryName)
            try DirectoryHandle(fs: fs, path: "").sync()
        }
        tenantsDirectory = try DirectoryHandle(fs: fs, path: Self.tenantsDirectoryName)
        startEviction()
    }

    /// Relative to the data directory.
    public func directory(of id: TenantId) -> String { Self.tenantsDirectoryName + "/" + id.description }

    /// Opens every tenant directory (a tenant that fails to load is kept, broken
    /// or still loading). Half-created tenants (`*.___temp`) are removed.
    @discardableResult
    public func loadAll() async throws(StorageError) -> [TenantId] {
        let fs = storage.fs
        var ids: [TenantId] = []
        for name in try Directory.list(fs, tenantsDirectory.path) {
            let path = tenantsDirectory.child(name)
            if name.hasSuffix("___temp") {
                Directory.removeTree(fs, path)
                continue
            }
            guard let id = try? TenantId(parsing: name), id.description == name, Directory.isDirectory(fs, path) else {
                logger.warning("ignoring unexpected entry in the tenants directory", metadata: ["entry": "\(name)"])
                continue
            }
            let tenant = await Tenant.open(id: id, directory: path, config: config, storage: storage, logger: logger)
            tenants.withLock { $0[id] = tenant }
            ids.append(id)
        }
        return ids
    }

    /// Creates an empty tenant and returns it once it is active. All or
    /// nothing: a create that fails (a full disk, no descriptors) leaves no
    /// directory behind, so it can simply be retried.
    public func create(_ id: TenantId) async throws(StorageError) -> Tenant {
        let failpoints = self.failpoints
        return try await install(id, doing: "create") { fs, temp throws(StorageError) in
            try IndexFile(tenant: id).write(directory: try DirectoryHandle(fs: fs, path: temp), failpoints: failpoints)
        }.tenant
    }

    /// The one way a tenant directory comes to be (create, attach): the id is
    /// claimed, `fill` builds `<id>.___temp` (its WAL directory made already)
    /// on an I/O thread, the directory is renamed into place and the tenant
    /// opened. Any failure undoes it all, so a retry starts clean.
    func install<T: Sendable>(_ id: TenantId, doing what: String,
                              _ fill: @escaping @Sendable (any FileSystem, String) throws(StorageError) -> T)
        async throws(StorageError) -> (tenant: Tenant, built: T)
    {
        let claimed = creating.withLock { c in
            tenants.withLock { $0[id] == nil } && c.insert(id).inserted
        }
        guard claimed else { throw .tenantExists(id) }
        defer { _ = creating.withLock { $0.remove(id) } }
        let fs = storage.fs
        let final = directory(of: id)
        let temp = final + ".___temp"
        guard !Directory.exists(fs, final) else { throw .tenantExists(id) }
        let tenantsDirectory = self.tenantsDirectory
        let built = try await BlockingIO.run { () throws(StorageError) -> T in
            Directory.removeTree(fs, temp)
            do throws(StorageError) {
                try Directory.create(fs, temp)
                try Directory.create(fs, temp + "/" + Tenant.walDirectoryName)
                let built = try fill(fs, temp)
                try Self.renameDirectory(fs, temp, final, tenant: id)
                tenantsDirectory.sync()
                return built
            } catch {
                Self.removeNewTenant(fs, temp)
                throw error.explainedAsResourceExhausted("tenant \(id): \(what)")
            }
        }
        let tenant = await Tenant.open(id: id, directory: final, config: config, storage: storage, logger: logger)
        guard tenant.lifecycle == .active else {
            let status = tenant.status()
            await tenant.close()
            // Nothing acknowledged lives there yet: undo it so a retry starts clean.
            _ = try? await BlockingIO.run { () throws(StorageError) in
                Self.removeNewTenant(fs, final)
                tenantsDirectory.sync()
            }
            let reason = status.lastLoadError ?? status.state.name
            if case .broken = status.state { throw .tenantBroken(id, reason: reason) }
            throw .resourceExhausted("tenant \(id): \(what) failed: \(reason); nothing was kept, retry later")
        }
        tenants.withLock { $0[id] = tenant }
        return (tenant, built)
    }

    /// Removes what a create made, by name: listing a directory needs a
    /// descriptor, and running out of them is one reason a create fails.
    static func removeNewTenant(_ fs: any FileSystem, _ path: String) {
        for name in [IndexFile.tempName, IndexFile.fileName] { try? fs.unlink(path + "/" + name) }
        try? fs.rmdir(path + "/" + Tenant.walDirectoryName)
        try? fs.rmdir(path)
        if Directory.exists(fs, path) { Directory.removeTree(fs, path) }
    }

    static func renameDirectory(_ fs: any FileSystem, _ from: String, _ to: String, tenant: TenantId)
        throws(StorageError)
    {
        do throws(SystemError) { try fs.renameNoReplace(from, to) } catch {
            if error.errno == EEXIST { throw .tenantExists(tenant) }
            guard error.errno == EINVAL || error.errno == ENOSYS else {
                throw .io(operation: "rename", path: to, errno: error.errno)
            }
            do throws(SystemError) { try fs.rename(from, to) } catch {
                throw .io(operation: "rename", path: to, errno: error.errno)
            }
        }
    }

    public func tenant(_ id: TenantId) throws(StorageError) -> Tenant {
        guard let t = tenants.withLock({ $0[id] }) else { throw .tenantNotFound(id) }
        return t
    }

    var isShutDown: Bool { shutDown.load(ordering: .acquiring) }

    public var tenantIds: [TenantId] { tenants.withLock { $0.keys.sorted() } }

    /// Ends every read waiting for an LSN, in every tenant, as unavailable
    /// for `reason` (the server's shutdown: nothing is left waiting).
    public func failWaiters(reason: String) {
        for t in tenants.withLock({ Array($0.values) }) { t.lsnWait.failAll(.tenantUnavailable(t.id, state: reason)) }
    }

    /// Closes every tenant and gives up the data directory's lock.
    public func shutdown() async {
        shutDown.store(true, ordering: .releasing)
        for t in tenants.withLock({ Array($0.values) }) { await t.close() }
        lock?.release()
    }
}
