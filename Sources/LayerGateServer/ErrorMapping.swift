import LayerGateStorage
import LayerGateWire

/// Storage errors as the wire reports them: the code a client branches on and
/// the message a person reads. INTERNAL is for damage and bugs; a full disk or
/// descriptor table is RESOURCE_EXHAUSTED, which a client may retry.
enum ErrorMapping {
    static func wire(_ e: StorageError) -> Wire.Error {
        let code: Wire.ErrorCode
        var message = e.description
        switch e {
        case .invalidTenantId, .invalidArgument: code = .invalidArgument
        case .tenantNotFound: code = .tenantNotFound
        case .tenantExists: code = .tenantExists
        // Cancelled work is a compaction or flush stopped by a reset or shutdown: try again.
        case .tenantUnavailable, .tenantBroken, .cancelled: code = .tenantUnavailable
        case .pageNotFound: code = .pageNotFound
        case .lsnNotAvailable: code = .lsnNotAvailable
        case .lsnBelowGcHorizon: code = .lsnBelowGcHorizon
        case .layerExists: code = .layerExists
        case .resourceExhausted: code = .resourceExhausted
        case .io where e.isResourceExhaustion:
            code = .resourceExhausted
            message += " (the server is short of disk space or file descriptors; retry later)"
        case .corruptLayer, .corruptWal, .corruptIndex, .io, .dataDirectoryLocked, .failpoint:
            code = .internal
        case .remote(_, let r):
            switch r {
            case .unavailable: code = .tenantUnavailable  // the store is down or refusing: retry later
            case .exhausted: code = .resourceExhausted  // this server's descriptors, memory or disk: retry later
            case .localIO: code = .internal  // this server's disk failed: damage, not the store
            case .conflict: code = .layerExists
            case .corruptIndex: code = .internal
            case .badConfiguration: code = .invalidArgument
            }
        }
        return Wire.Error(code: code, message: message)
    }
}
