import LayerGateAuth
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The tokens one connection has shown, verified once each and kept until
/// they expire, so signatures stay off the GetPage path. At most eight.
///
/// `exp` is checked here, on every request: a verified token's expiry is kept
/// as a deadline on the monotonic clock, which the connection reads once per
/// batch of frames, so a GetPage reads no wall clock (that cost 1 % of the
/// authenticated GetPage path). A freshly verified token was checked by the verifier.
struct TokenCache: Sendable {
    private struct Entry: Sendable {
        var token: String
        var result: Result<Grant, TokenError>
        var until: NIODeadline?
    }

    private var entries: [Entry] = []

    /// The verification of `token` on this connection as of `now` (`expired`
    /// once past its `exp`), or nil when it has not been seen.
    func lookup(_ token: String, at now: NIODeadline) -> Result<Grant, TokenError>? {
        guard let e = entry(token) else { return nil }
        return Self.verdict(e.result, until: e.until, at: now)
    }

    /// A verification as of `now`: `expired` once past `until`.
    static func verdict(_ result: Result<Grant, TokenError>, until: NIODeadline?, at now: NIODeadline) -> Result<Grant, TokenError> {
        if let until, now >= until { return .failure(.expired) }
        return result
    }

    /// The verification of `token` and when it runs out (`exp`), or nil when it has not been seen.
    func entry(_ token: String) -> (result: Result<Grant, TokenError>, until: NIODeadline?)? {
        guard let e = entries.first(where: { Self.sameBytes($0.token, token) }) else { return nil }
        return (e.result, e.until)
    }

    /// Whether a token shown here may write pages (ingest or admin, not expired).
    func mayWrite(at now: NIODeadline) -> Bool {
        entries.contains { e in
            guard case .success(let g) = e.result else { return false }
            return g.scope != .tenant && e.until.map { now < $0 } ?? true
        }
    }

    mutating func remember(_ token: String, _ result: Result<Grant, TokenError>) {
        // Not yet valid is not final: verified again until it is.
        if case .failure(.notYetValid) = result { return }
        guard !entries.contains(where: { Self.sameBytes($0.token, token) }) else { return }
        if entries.count >= 8 { entries.removeFirst() }
        var until: NIODeadline?
        if case .success(let g) = result, let expires = g.expires {
            let seconds = max(0, min(expires.timeIntervalSinceNow, 1e9))  // at most ~31 years: no overflow
            until = .now() + .nanoseconds(Int64(seconds * 1e9))
        }
        entries.append(Entry(token: token, result: result, until: until))
    }

    /// A token is its bytes. `String ==` is Unicode canonical equivalence, under
    /// which a forged token with KELVIN SIGN for "K" would pass for the real one.
    static func sameBytes(_ a: String, _ b: String) -> Bool {
        var (a, b) = (a, b)
        return a.withUTF8 { x in
            b.withUTF8 { y in
                guard x.count == y.count, let xs = x.baseAddress, let ys = y.baseAddress else { return x.count == y.count }
                return memcmp(xs, ys, x.count) == 0
            }
        }
    }
}

