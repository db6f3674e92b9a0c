import Foundation
import LayerGateAuth
import LayerGateClient
import LayerGateWire
import Testing

/// Issue 10, against the real server: GetPages pipelined on one connection
/// with more distinct tokens than a connection keeps (eight), changing every
/// few frames, so that cache hits are checked in place against a read right
/// whose token the connection's cache has since let go. Each answer must be
/// what its own frame's token allows, and nothing else.
@Suite("tokens mixed on one connection")
struct TokenMixTests {
    enum Kind { case tenantA, tenantB, admin, unauthenticated }

    @Test func everyPipelinedFrameIsJudgedByItsOwnToken() async throws {
        let tenantB = AuthTests.tenantB
        let (server, privatePEM) = try await AuthTests.serverWithAPage()
        let admin = try await LayerGateClient.connect(
            socketPath: server.dir.socket, token: try await TokenMinter.token(scope: .admin, tenant: nil, ttl: .seconds(3600), privateKeyPEM: privatePEM))
        try await admin.createTenant(tenantB)
        _ = try await admin.putRecords(tenant: tenantB, [wimage(1, 20)])
        _ = try await admin.getPage(tenant: tenantB, key: wkey(1), lsn: 20)  // both pages cached
        await admin.close()

        // 13 tokens: four for each tenant (tenant and ingest scope, distinct expiries), two admin, three refused.
        var tokens: [(String, Kind)] = []
        for (i, scope) in [Scope.tenant, .ingest, .tenant, .ingest].enumerated() {
            tokens.append((try await TokenMinter.token(scope: scope, tenant: tenantA, ttl: .seconds(3600 + i), privateKeyPEM: privatePEM), .tenantA))
            tokens.append((try await TokenMinter.token(scope: scope, tenant: tenantB, ttl: .seconds(3600 + i), privateKeyPEM: privatePEM), .tenantB))
        }
        for i in 0..<2 {
            tokens.append((try await TokenMinter.token(scope: .admin, tenant: nil, ttl: .seconds(3700 + i), privateKeyPEM: privatePEM), .admin))
        }
        let (otherKey, _) = try TokenMinter.keyPair()
        tokens.append((try await TokenMinter.token(scope: .admin, tenant: nil, ttl: .seconds(3600), privateKeyPEM: otherKey), .unauthenticated))
        tokens.append(("not.a.token", .unauthenticated))
        tokens.append(("", .unauthenticated))
        #expect(tokens.count == 13)

        let connection = try RawConnection(server.dir.socket)
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(n))
        }
        var token = 0
        var served = 0, refused = 0
        for batch in 0..<20 {
            // 100 frames in one write; the token changes after 1 to 6 frames.
            var bytes: [UInt8] = []
            var expected: [(id: UInt64, tenant: String, kind: Kind)] = []
            var left = 0
            for i in 0..<100 {
                if left == 0 { (token, left) = (next(tokens.count), 1 + next(6)) }
                left -= 1
                let tenant = next(2) == 0 ? tenantA : tenantB
                let id = UInt64(batch * 100 + i + 1)
                let body = Wire.Request.Body.getPage(Wire.GetPageRequest(tenantId: tenant, key: wkey(1), lsn: tenant == tenantA ? 10 : 20))
                bytes += Wire.frame(Wire.encode(Wire.Request(requestId: id, authToken: tokens[token].0, body: body)))
                expected.append((id, tenant, tokens[token].1))
            }
            connection.send(bytes)
            // Answers may come in another order (a token not yet verified is verified in a task).
            var answers: [UInt64: Wire.Response.Body?] = [:]
            for _ in expected {
                let frame = try #require(await connection.readFrame(), "batch \(batch): the server closed the connection")
                let response = try Wire.decodeResponse(frame)
                answers[response.requestId] = response.body
            }
            for e in expected {
                guard let body = answers[e.id] else {
                    Issue.record("request \(e.id): no answer")
                    continue
                }
                let allowed = e.kind == .admin || (e.kind == .tenantA && e.tenant == tenantA) || (e.kind == .tenantB && e.tenant == tenantB)
                switch body {
                case .getPage(let page)?:
                    #expect(allowed, "request \(e.id): a page of \(e.tenant) served to a \(e.kind) token")
                    let right = page.page == wpage(e.tenant == tenantA ? 1 << 32 | 10 : 1 << 32 | 20)
                    #expect(right, "request \(e.id): not the page of \(e.tenant)")
                    served += 1
                case .error(let error)?:
                    #expect(!allowed, "request \(e.id): \(error.code.name) for a \(e.kind) token reading \(e.tenant)")
                    #expect(error.code == (e.kind == .unauthenticated ? .unauthenticated : .permissionDenied),
                            "request \(e.id): \(error.code.name) for a \(e.kind) token")
                    refused += 1
                default:
                    Issue.record("request \(e.id): unexpected answer \(String(describing: body))")
                }
            }
        }
        #expect(served > 500 && refused > 500, "both kinds of answer are exercised: \(served) served, \(refused) refused")
        #expect(await server.stop() == 0)
    }
}
