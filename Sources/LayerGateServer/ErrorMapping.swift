import LayerGateStorage
import LayerGateWire

/// Storage errors as the wire reports them: the code a client branches on and
/// the message a person reads.
enum ErrorMapping {
    static func wire(_ e: StorageError) -> Wire.Error {
        let code: Wire.ErrorCode
        switch e {
        case .invalidTenantId, .invalidArgument: code = .invalidArgument
        case .tenantNotFound: code = .tenantNotFound
        case .tenantExists: code = .tenantExists
        case .tenantUnavailable, .tenantBroken: code = .tenantUnavailable
        case .pageNotFound: code = .pageNotFound
        case .lsnNotAvailable: code = .lsnNotAvailable
        case .lsnBelowGcHorizon: code = .lsnBelowGcHorizon
        case .layerExists: code = .layerExists
        case .corruptLayer, .corruptWal, .corruptIndex, .io, .failpoint, .cancelled, .notCached: code = .internal
        }
        return Wire.Error(code: code, message: e.description)
    }
}
