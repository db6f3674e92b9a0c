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
            ("a future nbf", try await signed(privatePEM, ["scope": "admin", "nbf": Date().timeIntervalSince1970 + 3600])),
            ("a crit header", try await signed(privatePEM, ["scope": "admin"], header: ["crit": .array([.string("exp")])])),
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

    /// A token is verified once per connection, but its `exp` still holds:
    /// once past it, the same connection is refused, for a cached page
    /// (answered on the event loop) as for a status (answered in a task).
    @Test func aTokenThatExpiresOnAnOpenConnectionIsRefused() async throws {
        let (server, privatePEM) = try await Self.serverWithAPage()
        let short = try await TokenMinter.token(scope: .tenant, tenant: tenantA, ttl: .seconds(1), privateKeyPEM: privatePEM)
        let reader = try await LayerGateClient.connect(socketPath: server.dir.socket, token: short)
        #expect(try await reader.getPage(tenant: tenantA, key: wkey(1), lsn: 10).page == wpage(1 << 32 | 10))
        _ = try await reader.tenantStatus(tenantA)
        try await Task.sleep(for: .milliseconds(2200))  // exp is in whole seconds, at most 2 s away
        await expectServerError(.unauthenticated, { try await reader.getPage(tenant: tenantA, key: wkey(1), lsn: 10) })
        await expectServerError(.unauthenticated, { try await reader.tenantStatus(tenantA) })
        await reader.close()
        #expect(await server.stop() == 0)
    }

    /// A server that takes tokens signed by a new key, with tenant A created
    /// through `admin`, a connection with an admin token.
    static func serverWithATenant() async throws -> (ServerProcess, privatePEM: String, admin: LayerGateClient) {
        let dir = ServerDir()
        let (privatePEM, publicPEM) = try TokenMinter.keyPair()
        let keyFile = dir.path + "/token-key.pub.pem"
        try publicPEM.write(toFile: keyFile, atomically: true, encoding: .utf8)
        let server = try await ServerProcess(dir: dir, extraArgs: ["--auth-public-key", keyFile])
        let admin = try await LayerGateClient.connect(
            socketPath: dir.socket, token: try await TokenMinter.token(scope: .admin, tenant: nil, ttl: .seconds(3600), privateKeyPEM: privatePEM))
        try await admin.createTenant(tenantA)
        return (server, privatePEM, admin)
    }

    /// A server that checks tokens, with page 1 of `tenantA` at LSN 10 in its cache.
    static func serverWithAPage() async throws -> (ServerProcess, privatePEM: String) {
        let (server, privatePEM, admin) = try await serverWithATenant()
        _ = try await admin.putRecords(tenant: tenantA, [wimage(1, 10)])
        _ = try await admin.getPage(tenant: tenantA, key: wkey(1), lsn: 10)
        await admin.close()
        return (server, privatePEM)
    }

    /// A token is its bytes: one with KELVIN SIGN (U+212A) for a "K" is
    /// canonically equivalent to the real one as a Swift String, but it is
    /// not the token that was verified on this connection. Either order.
    @Test func aLookalikeOfAKnownTokenIsNotIt() async throws {
        let (server, privatePEM) = try await Self.serverWithAPage()
        // A token with a "K" in it (tokens differ by their expiry).
        var real = ""
        for ttl in 3600..<3700 where !real.contains("K") {
            real = try await TokenMinter.token(scope: .tenant, tenant: tenantA, ttl: .seconds(ttl), privateKeyPEM: privatePEM)
        }
        try #require(real.contains("K"))
        let lookalike = real.replacingOccurrences(of: "K", with: "\u{212A}")
        #expect(real == lookalike && real.utf8.count != lookalike.utf8.count, "Swift calls them equal; their bytes differ")
        let getPage = Wire.Request.Body.getPage(Wire.GetPageRequest(tenantId: tenantA, key: wkey(1), lsn: 10))
        let status = Wire.Request.Body.tenantStatus(Wire.TenantStatusRequest(tenantId: tenantA))
        for realFirst in [true, false] {
            let c = try await server.client()
            if realFirst {
                _ = try await c.call(getPage, authToken: real)
                _ = try await c.call(status, authToken: real)
            }
            await expectServerError(.unauthenticated, { try await c.call(getPage, authToken: lookalike) })
            await expectServerError(.unauthenticated, { try await c.call(status, authToken: lookalike) })
            _ = try await c.call(getPage, authToken: real)
            _ = try await c.call(status, authToken: real)
            await c.close()
        }
        #expect(await server.stop() == 0)
    }

    /// Large frames reserve from the in-flight budget before their body
    /// arrives. Peers that cannot write (no token here) hold only a small pool
    /// of their own: an ingester's 1 MiB put, the first request on a fresh
    /// connection, goes through at once while sixteen of them stall 16 MiB frames.
    @Test func peersThatCannotWriteNeverHoldBackAnIngester() async throws {
        let (server, privatePEM, admin) = try await Self.serverWithATenant()
        let dir = server.dir
        // A header for 16 MiB, then the start of a PutRecords without a token, then nothing.
        let stall: [UInt8] = [0x01, 0x00, 0x00, 0x00, 0x08, 0x01, 0x5a, 0xf0, 0xff, 0xff, 0x07]
        let stallers = try (0..<16).map { _ in try RawConnection(dir.socket) }
        for s in stallers { s.send(stall) }
        try await Task.sleep(for: .milliseconds(300))
        let ingest = try await LayerGateClient.connect(
            socketPath: dir.socket, token: try await TokenMinter.token(scope: .ingest, tenant: tenantA, ttl: .seconds(600), privateKeyPEM: privatePEM))
        let start = ContinuousClock.now
        _ = try await ingest.putRecords(tenant: tenantA, (1...128 as ClosedRange<UInt64>).map { wimage(UInt32($0), $0) })
        let took = ContinuousClock.now - start
        print("a 1 MiB put behind 16 stalled 16 MiB frames from peers without a token: \(took)")
        #expect(took < .seconds(3))
        #expect(try await ingest.getPage(tenant: tenantA, key: wkey(128), lsn: 128).page == wpage(128 << 32 | 128))
        withExtendedLifetime(stallers) {}  // open until here, in optimized builds too
        await ingest.close()
        await admin.close()
        #expect(await server.stop() == 0)
    }

    /// A large put carries a token this connection has not shown: it is
    /// verified before the frame is read, to pick the frame's pool. One that
    /// is not valid yet (`nbf` ahead) is not kept as a verdict, and it used to
    /// be verified again and again, a core busy per connection until its
    /// `nbf` (found by an adversarial run). It is refused at once now, as a
    /// small request with it is, and the connection goes on.
    @Test func aLargePutWhoseTokenIsNotValidYetIsRefusedAtOnce() async throws {
        let (server, privatePEM, admin) = try await Self.serverWithATenant()
        let early = try await signed(privatePEM, ["scope": "admin", "nbf": Date().timeIntervalSince1970 + 3600])
        let c = try await LayerGateClient.connect(socketPath: server.dir.socket, token: early, timeout: .seconds(10))
        let records = (1...9 as ClosedRange<UInt64>).map { wimage(UInt32($0), $0) }  // about 74 KB: a large frame
        for _ in 0..<2 {
            let start = ContinuousClock.now
            await expectServerError(.unauthenticated, { _ = try await c.putRecords(tenant: tenantA, records) })
            // Well inside the client's 10 s: the fault verified until `nbf`, an hour. (3 s was once
            // missed by 0.6 s, while moto's 5 s stops held Swift's pool; the whole test takes 0.2-0.5 s now.)
            #expect(ContinuousClock.now - start < .seconds(3))
        }
        #expect(try await admin.putRecords(tenant: tenantA, records) == 9)
        #expect(try await admin.tenantStatus(tenantA).lastRecordLsn == 9, "nothing of the refused puts landed")
        await c.close()
        await admin.close()
        #expect(await server.stop() == 0)
    }

    /// A correctly signed token with any claims and header fields.
    func signed(_ privatePEM: String, _ claims: [String: any Sendable], header: JWTHeader = JWTHeader()) async throws -> String {
        struct Raw: JWTPayload {
            var json: [String: Double]
            var scope: String
            func verify(using algorithm: some JWTAlgorithm) async throws {}
            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: Key.self)
                try c.encode(scope, forKey: Key(stringValue: "scope"))
                for (k, v) in json { try c.encode(v, forKey: Key(stringValue: k)) }
            }
            init(json: [String: Double], scope: String) { (self.json, self.scope) = (json, scope) }
            init(from decoder: any Decoder) throws { (json, scope) = ([:], "") }
            struct Key: CodingKey {
                var stringValue: String
                var intValue: Int? { nil }
                init(stringValue: String) { self.stringValue = stringValue }
                init?(intValue: Int) { nil }
            }
        }
        let keys = JWTKeyCollection()
        await keys.add(eddsa: try EdDSA.PrivateKey(pem: privatePEM))
        let numbers = claims.compactMapValues { $0 as? Double }
        return try await keys.sign(Raw(json: numbers, scope: claims["scope"] as? String ?? ""), header: header)
    }

    /// A correctly signed token with a claim the server does not know.
    func hmacFree(_ privatePEM: String, scope: String) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(eddsa: try EdDSA.PrivateKey(pem: privatePEM))
        return try await keys.sign(ForgedClaims(scope: scope, tenant_id: nil, exp: nil))
    }
}

/// What a peer learns from a refused token is a fixed sentence: no memory
/// address or decoder dump (an adversarial run saw `… at $55c26bb7d510` in
/// the message for a token one character short).
@Suite("token refusals")
struct TokenRefusalTests {
    @Test func aMalformedTokenIsRefusedWithoutInternals() async throws {
        let (privatePEM, publicPEM) = try TokenMinter.keyPair()
        let verifier = try await TokenVerifier(publicKeyPEM: publicPEM)
        let good = try await TokenMinter.token(scope: .tenant, tenant: tenantA, ttl: .seconds(600), privateKeyPEM: privatePEM)
        let parts = good.split(separator: ".").map(String.init)
        let b64 = { (s: String) in Data(s.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_") }
        let bad = [String(good.dropLast()), good + "A", parts[0] + "." + b64(#"{"scope":5}"#) + "." + parts[2],
                   parts[0] + "." + b64(#"{"exp":"soon","scope":"admin"}"#) + "." + parts[2], "a.b.c", "...", parts[0] + ".."]
        for token in bad {
            guard case .failure(let e) = await verifier.verify(token) else {
                Issue.record("accepted \(token)")
                continue
            }
            let text = "\(e)"
            #expect(text.count < 160, "\(text)")
            #expect(text.range(of: #"0x[0-9a-fA-F]{4,}|\$[0-9a-fA-F]{6,}|DecodingError|CodingKeys"#, options: .regularExpression) == nil, "\(text)")
        }
    }
}
