#if canImport(Glibc)
import Glibc
#endif

/// Every failure the storage engine reports, with the context an operator
/// needs: which tenant, which file, which LSN. File paths are relative to the
/// data directory and printed by tenant and role (`FileLabel`), so no message
/// says where the data lives.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A tenant id that is not 32 hex digits.
    case invalidTenantId(String)
    /// A request that breaks the rules: a bad record or batch, an unknown failpoint.
    case invalidArgument(String)
    /// No tenant with that id.
    case tenantNotFound(TenantId)
    /// `createTenant` for an id that exists.
    case tenantExists(TenantId)
    /// The tenant is loading or resetting; try again.
    case tenantUnavailable(TenantId, state: String)
    /// The tenant failed to load and serves nothing until reset.
    case tenantBroken(TenantId, reason: String)
    /// No record for the key at or below the LSN.
    case pageNotFound(TenantId, PageKey, Lsn)
    /// The LSN is beyond what has been ingested, and the wait ran out.
    case lsnNotAvailable(TenantId, requested: Lsn, lastRecordLsn: Lsn)
    /// The LSN is below the GC cutoff: its history is gone.
    case lsnBelowGcHorizon(TenantId, requested: Lsn, cutoff: Lsn)
    /// A gated publish found the final name taken; the existing file is untouched.
    case layerExists(file: String)
    /// A layer file failed validation (magic, version, checksum, size, offsets).
    case corruptLayer(file: String, reason: String)
    /// The WAL has damage that is not a torn tail.
    case corruptWal(file: String, reason: String)
    /// `index.json` cannot be read or does not parse.
    case corruptIndex(file: String, reason: String)
    /// A system call failed.
    case io(operation: String, path: String, errno: Int32)
    /// A limit of the machine or the server was hit (disk full, descriptors,
    /// a flush that cannot keep up); nothing of the request was stored and it
    /// may be retried later. The message says what to do.
    case resourceExhausted(String)
    /// Another process holds the data directory (its pid, 0 if unknown).
    case dataDirectoryLocked(pid: Int32)
    /// A failpoint with action `return` fired.
    case failpoint(String)
    /// The operation was cancelled or the tenant is shutting down.
    case cancelled(String)
    /// The remote store failed or refused (attach, detach).
    case remote(TenantId, RemoteError)

    public var description: String {
        switch self {
        case .invalidTenantId(let s): return "invalid tenant id '\(Self.printable(s))': expected 32 hex digits"
        case .invalidArgument(let s): return "invalid argument: \(s)"
        case .tenantNotFound(let t): return "tenant \(t) not found"
        case .tenantExists(let t): return "tenant \(t) already exists"
        case .tenantUnavailable(let t, let state): return "tenant \(t) is \(state), try again"
        case .tenantBroken(let t, let reason): return "tenant \(t) is broken: \(reason)"
        case .pageNotFound(let t, let k, let l): return "tenant \(t): no page \(k) at or below LSN \(l)"
        case .lsnNotAvailable(let t, let r, let last):
            return "tenant \(t): LSN \(r) not available (last record LSN \(last))"
        case .lsnBelowGcHorizon(let t, let r, let c): return "tenant \(t): LSN \(r) is below the GC cutoff \(c)"
        case .layerExists(let f): return "layer file already exists: \(FileLabel.describe(f))"
        case .corruptLayer(let f, let r): return "corrupt layer file (\(FileLabel.describe(f))): \(r)"
        case .corruptWal(let f, let r): return "corrupt WAL (\(FileLabel.describe(f))): \(r)"
        case .corruptIndex(let f, let r): return "corrupt index (\(FileLabel.describe(f))): \(r)"
        case .io(let op, let p, let e): return "\(op) \(FileLabel.describe(p)): \(SystemError(e))"
        case .resourceExhausted(let s): return s
        case .dataDirectoryLocked(let pid):
            return "the data directory is in use by another layergate process\(pid > 0 ? " (pid \(pid))" : ""); refusing to open it"
        case .failpoint(let n): return "failpoint \(n) returned an error"
        case .cancelled(let s): return "cancelled: \(s)"
        case .remote(let t, let e): return "tenant \(t): \(e)"
        }
    }

    /// The errno of a failed system call, when that is what this is.
    public var errno: Int32? {
        if case .io(_, _, let e) = self { return e }
        return nil
    }

    /// A full disk, no descriptors or no memory: the same call may work later.
    public var isResourceExhaustion: Bool {
        switch self {
        case .resourceExhausted: return true
        case .io(_, _, let e): return SystemError(e).isResourceExhaustion
        case .remote(_, .exhausted): return true
        default: return false
        }
    }

    /// An I/O error that a full disk or descriptor table caused, as the client
    /// should read it: what failed, that nothing was kept, and what to do.
    /// Other errors are returned as they are.
    func explainedAsResourceExhausted(_ what: String) -> StorageError {
        guard case .io = self, isResourceExhaustion else { return self }
        return .resourceExhausted(
            "\(what) failed: \(self); nothing of it was kept. Free space on the data directory's filesystem (or file descriptors), then retry")
    }

    /// Text from a peer, made safe to print: no control characters, bounded length.
    static func printable(_ s: String) -> String {
        let clean = String(s.unicodeScalars.prefix(80).map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) })
        return s.unicodeScalars.count > 80 ? clean + "…" : clean
    }
}
