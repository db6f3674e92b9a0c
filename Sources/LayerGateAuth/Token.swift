import Foundation
import JWTKit

/// What a token lets its holder do (the contract's scopes).
public enum Scope: String, Sendable, CaseIterable {
    /// GetPage and TenantStatus of one tenant: what a compute node needs.
    case tenant
    /// The same, plus PutRecords for that tenant: what its ingester needs.
    case ingest
    /// Every request.
    case admin
}

/// A verified token: its scope, its tenant (32 lowercase hex digits, for
/// `tenant` and `ingest`), and when it expires.
public struct Grant: Sendable, Equatable {
    public var scope: Scope
    public var tenant: String?
    public var expires: Date?

    public init(scope: Scope, tenant: String?, expires: Date?) {
        self.scope = scope
        self.tenant = tenant
        self.expires = expires
    }
}

/// Why a token was not accepted: each is UNAUTHENTICATED on the wire.
public enum TokenError: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case malformed(String)
    case badSignature
    case expired
    case notYetValid

    public var description: String {
        switch self {
        case .missing: return "this server requires a token (auth_token) and none was sent"
        case .malformed(let s): return "the token is malformed: \(s)"
        case .badSignature: return "the token's signature does not verify with the server's key"
        case .expired: return "the token has expired"
        case .notYetValid: return "the token is not valid yet (nbf)"
        }
    }
}

/// The JWT claims LayerGate reads and writes. Encode and decode in one place.
struct TokenClaims: JWTPayload {
    var scope: String
    var tenant_id: String?
    var exp: ExpirationClaim?
    var iat: IssuedAtClaim?
    var nbf: NotBeforeClaim?

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp?.verifyNotExpired()
    }

    /// The grant these claims describe, or why they describe none.
    func grant() -> Result<Grant, TokenError> {
        if let nbf, Date() < nbf.value { return .failure(.notYetValid) }
        guard let scope = Scope(rawValue: scope) else { return .failure(.malformed("unknown scope '\(self.scope.prefix(40))'")) }
        var tenant: String?
        if scope != .admin {
            guard let t = tenant_id, t.utf8.count == 32, t.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 102) })
            else { return .failure(.malformed("scope \(scope.rawValue) needs a tenant_id of 32 hex digits")) }
            tenant = t.lowercased()
        }
        return .success(Grant(scope: scope, tenant: tenant, expires: exp?.value))
    }
}

/// Verifies tokens against the server's Ed25519 public key. Only EdDSA
/// tokens signed by that key pass; `exp` is honoured when present.
public final class TokenVerifier: Sendable {
    private let keys: JWTKeyCollection

    /// - Parameter publicKeyPEM: an Ed25519 public key, PEM ("BEGIN PUBLIC KEY").
    public init(publicKeyPEM: String) async throws {
        let key = try EdDSA.PublicKey(pem: publicKeyPEM)
        keys = JWTKeyCollection()
        await keys.add(eddsa: key)
    }

    public func verify(_ token: String) async -> Result<Grant, TokenError> {
        guard !token.isEmpty else { return .failure(.missing) }
        guard token.utf8.count <= 8192 else { return .failure(.malformed("longer than 8 KiB")) }
        if let refused = Self.checkHeader(token) { return .failure(refused) }
        do {
            let claims = try await keys.verify(token, as: TokenClaims.self)
            return claims.grant()
        } catch let e as JWTError {
            switch e.errorType {
            case .claimVerificationFailure: return .failure(.expired)
            case .signatureVerificationFailed: return .failure(.badSignature)
            default: return .failure(.malformed("it does not parse as a JWT (\(e.errorType))"))
            }
        } catch {
            // Not the error's own text: a DecodingError names memory addresses, which a peer must not learn.
            return .failure(.malformed("its claims are not JSON of the expected types"))
        }
    }
}

extension TokenVerifier {
    /// RFC 7515: a header naming critical extensions the verifier does not
    /// implement must be refused (jwt-kit does not look at `crit`).
    static func checkHeader(_ token: String) -> TokenError? {
        guard let first = token.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).first else { return .malformed("no header") }
        var b64 = first.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        b64 += String(repeating: "=", count: (4 - b64.count % 4) % 4)
        guard let data = Data(base64Encoded: b64),
              let header = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return .malformed("the header is not base64url JSON") }
        if header["crit"] != nil { return .malformed("the header lists critical extensions (crit); none are supported") }
        return nil
    }
}

/// Makes key pairs and tokens (the `layergate keygen` and `token` commands).
public enum TokenMinter {
    /// A new Ed25519 key pair, PEM encoded.
    public static func keyPair() throws -> (privatePEM: String, publicPEM: String) {
        let key = try EdDSA.PrivateKey(curve: .ed25519)
        return (key.pemRepresentation, key.publicKey.pemRepresentation)
    }

    /// A token for `scope` (and `tenant`, for tenant and ingest), valid for
    /// `ttl` (nil: no expiry), signed with the PEM private key.
    public static func token(scope: Scope, tenant: String?, ttl: Duration?, privateKeyPEM: String) async throws -> String {
        let key = try EdDSA.PrivateKey(pem: privateKeyPEM)
        let keys = JWTKeyCollection()
        await keys.add(eddsa: key)
        // Every request carries the token, so it holds only what is checked:
        // no `iat`, and `exp` in whole seconds (278 bytes became 234).
        let expires = ttl.map {
            Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + Double($0.components.seconds)
                                         + Double($0.components.attoseconds) / 1e18).rounded(.up))
        }
        let claims = TokenClaims(scope: scope.rawValue, tenant_id: tenant?.lowercased(), exp: expires.map(ExpirationClaim.init(value:)),
                                 iat: nil, nbf: nil)
        return try await keys.sign(claims)
    }
}
