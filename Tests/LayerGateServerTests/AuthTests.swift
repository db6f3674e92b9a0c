import Foundation
import JWTKit
import LayerGateAuth
import LayerGateClient
import LayerGateWire
import Testing

/// Issue 10: with --auth-public-key every request needs a token of the right
/// scope and tenant; a request refused for its token reads and writes nothing.
@Suite("layergated with tokens", .serialized)
struct AuthTests {
    static let tenantB = "fedcba9876543210fedcba9876543210"

    /// The claims a forger would write (the server's own type is internal).
    struct ForgedClaims: JWTPayload {
        var scope: String
        var tenant_id: String?
        var exp: ExpirationClaim?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static func base64url(_ s: String) -> String {
        Data(s.utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    enum Request: CaseIterable, CustomStringConvertible {
        case getPage, tenantStatus, putRecords, compact, resetTenant, createTenant, listTenants, serverStatus, configureFailpoints
        var description: String { "\(self)" }
        var needs: String {
            switch self {
            case .getPage, .tenantStatus: return "read"
            case .putRecords: return "write"
            default: return "admin"
            }
        }
        func body(lsn: UInt64) -> Wire.Request.Body {
            switch self {
            case .getPage: return .getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 10))
            case .tenantStatus: return .tenantStatus(Wire.TenantStatusRequest(tenantId: tenantA))
            case .putRecords: return .putRecords(Wire.PutRecordsRequest(tenantId: tenantA, records: [wimage(1, lsn)]))
            case .compact: return .compact(Wire.CompactRequest(tenantId: tenantA))
            case .resetTenant: return .resetTenant(Wire.ResetTenantRequest(tenantId: tenantA))
            case .createTenant: return .createTenant(Wire.CreateTenantRequest(tenantId: String(format: "%032x", lsn)))
            case .listTenants: return .listTenants(Wire.ListTenantsRequest())
            case .serverStatus: return .serverStatus(Wire.ServerStatusRequest())
            case .configureFailpoints:
                return .configureFailpoints(Wire.ConfigureFailpointsRequest(failpoints: [Wire.Failpoint(name: "index-before-rename", action: "return")]))
            }
        }
    }

    @Test func everyRequestTimesEveryKindOfToken() async throws {
        let dir = ServerDir()
        let (privatePEM, publicPEM) = try TokenMinter.keyPair()
        let (otherPrivate, _) = try TokenMinter.keyPair()
        let keyFile = dir.path + "/token-key.pub.pem"
        try publicPEM.write(toFile: keyFile, atomically: true, encoding: .utf8)
        let server = try await ServerProcess(dir: dir, extraArgs: ["--auth-public-key", keyFile, "--enable-failpoints"])
        func mint(_ scope: Scope, _ tenant: String?, ttl: Duration? = .seconds(3600), key: String? = nil) async throws -> String {
            try await TokenMinter.token(scope: scope, tenant: tenant, ttl: ttl, privateKeyPEM: key ?? privatePEM)
        }
        let admin = try await mint(.admin, nil)
        let c = try await LayerGateClient.connect(socketPath: dir.socket, token: admin)
        try await c.createTenant(tenantA)
        try await c.createTenant(Self.tenantB)
        _ = try await c.putRecords(tenant: tenantA, [wimage(1, 10)])

        // An HS256 token whose secret is the public key (the classic algorithm confusion), and alg none.
        let hmac = JWTKeyCollection()
        await hmac.add(hmac: HMACKey(from: publicPEM), digestAlgorithm: .sha256)
        let confused = try await hmac.sign(ForgedClaims(scope: "admin", tenant_id: nil, exp: nil))
        let none = Self.base64url(#"{"alg":"none","typ":"JWT"}"#) + "." + Self.base64url(#"{"scope":"admin"}"#) + "."
        let valid = admin.split(separator: ".")
        let tampered = valid[0] + "." + Self.base64url(#"{"scope":"admin","tenant_id":null}"#) + "." + valid[2]

        let unauthenticated: [(String, String)] = [
            ("no token", ""), ("garbage", "garbage"), ("a bad signature", try await mint(.admin, nil, key: otherPrivate)),
            ("an expired token", try await mint(.admin, nil, ttl: .seconds(-60))), ("alg none", none),
            ("HS256 keyed with the public key", confused), ("a tampered payload", String(tampered)),
            ("an unknown scope", try await hmacFree(privatePEM, scope: "root")),
        ]
        let tenantToken = try await mint(.tenant, tenantA), ingestToken = try await mint(.ingest, tenantA)
        let otherTenant = try await mint(.ingest, Self.tenantB)
        var lsn: UInt64 = 10
        var creates: [String] = []
        var lastAllowedPut: UInt64 = 10
        for request in Request.allCases {
            for (what, token) in unauthenticated {
                lsn += 1
                await expectServerError(.unauthenticated, { try await c.call(request.body(lsn: lsn), authToken: token) },
                                        sourceLocation: #_sourceLocation)
                _ = what
            }
            lsn += 1
            await expectServerError(.permissionDenied, { try await c.call(request.body(lsn: lsn), authToken: otherTenant) })
            for (token, allowed) in [(tenantToken, request.needs == "read"), (ingestToken, request.needs != "admin")] {
                lsn += 1
                if allowed {
                    do { _ = try await c.call(request.body(lsn: lsn), authToken: token) } catch {
                        Issue.record("\(request) was refused: \(error)")
                    }
                    if request == .putRecords { lastAllowedPut = lsn }
                } else {
                    await expectServerError(.permissionDenied, { try await c.call(request.body(lsn: lsn), authToken: token) })
                }
            }
            lsn += 1
            do { _ = try await c.call(request.body(lsn: lsn), authToken: admin) } catch {
                Issue.record("admin \(request) was refused: \(error)")
            }
            if request == .putRecords { lastAllowedPut = lsn }
            if request == .createTenant { creates.append(String(format: "%032x", lsn)) }
            if request == .configureFailpoints {
                _ = try await c.call(.configureFailpoints(Wire.ConfigureFailpointsRequest(failpoints: [Wire.Failpoint(name: "index-before-rename", action: "off")])))
            }
        }
        // Nothing refused was written: the last put that landed is the admin's.
        #expect(try await c.tenantStatus(tenantA).lastRecordLsn == lastAllowedPut)
        #expect(try await c.getPage(tenant: tenantA, key: wkey(1), lsn: lastAllowedPut).page == wpage(UInt64(1) << 32 | lastAllowedPut))
        #expect(Set(try await c.listTenants()) == Set([tenantA, Self.tenantB] + creates), "only the admin's create")
        await c.close()

        // A client with no token at all is refused on a fresh connection too.
        let anonymous = try await server.client()
        await expectServerError(.unauthenticated, { try await anonymous.getPage(tenant: tenantA, key: wkey(1), lsn: 10) })
        await anonymous.close()
        #expect(await server.stop() == 0)
    }

    /// A correctly signed token with a claim the server does not know.
    func hmacFree(_ privatePEM: String, scope: String) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(eddsa: try EdDSA.PrivateKey(pem: privatePEM))
        return try await keys.sign(ForgedClaims(scope: scope, tenant_id: nil, exp: nil))
    }
}
