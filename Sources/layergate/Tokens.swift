import ArgumentParser
import Foundation
import LayerGateAuth

#if canImport(Glibc)
import Glibc
#endif

/// `layergate keygen --out DIR`: an Ed25519 key pair for signing tokens.
struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an Ed25519 key pair for tokens: DIR/token-key.pem (private, 0600) and DIR/token-key.pub.pem.",
        discussion: "Start layergated with --auth-public-key DIR/token-key.pub.pem; keep the private key where tokens are made.")

    @Option(help: "Directory for the key files (created if missing).") var out: String

    func run() throws {
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let (privatePEM, publicPEM) = try TokenMinter.keyPair()
        let privatePath = out + "/token-key.pem", publicPath = out + "/token-key.pub.pem"
        guard !FileManager.default.fileExists(atPath: privatePath) else {
            throw CLIError("\(privatePath) exists; refusing to overwrite a key")
        }
        let old = umask(0o077)
        defer { umask(old) }
        try privatePEM.write(toFile: privatePath, atomically: true, encoding: .utf8)
        chmod(privatePath, 0o600)
        try publicPEM.write(toFile: publicPath, atomically: true, encoding: .utf8)
        chmod(publicPath, 0o644)
        print("wrote \(privatePath) (keep it secret) and \(publicPath) (for layergated --auth-public-key)")
    }
}

/// `layergate token --scope S [--tenant T] [--ttl 1h] --private-key F`.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print a token: scope tenant (read one tenant), ingest (read and write one tenant) or admin (everything).")

    @Option(help: "tenant, ingest or admin.") var scope: String
    @Option(help: "The tenant (32 hex digits), for tenant and ingest.") var tenant: String?
    @Option(help: "How long it is valid: 90s, 30m, 12h, 7d; 'never' for no expiry.") var ttl = "1h"
    @Option(help: "The private key (PEM) from layergate keygen.") var privateKey: String

    func run() async throws {
        guard let scope = Scope(rawValue: scope) else { throw ValidationError("--scope must be tenant, ingest or admin") }
        if scope != .admin {
            guard let tenant, tenant.count == 32, tenant.allSatisfy(\.isHexDigit) else {
                throw ValidationError("--scope \(scope.rawValue) needs --tenant with 32 hex digits")
            }
        }
        let pem = try String(contentsOfFile: privateKey, encoding: .utf8)
        let token = try await TokenMinter.token(scope: scope, tenant: scope == .admin ? nil : tenant,
                                                ttl: try Self.parse(ttl), privateKeyPEM: pem)
        print(token)
    }

    static func parse(_ ttl: String) throws -> Duration? {
        if ttl == "never" { return nil }
        guard let unit = ttl.last, let n = Int64(ttl.dropLast()), n > 0 else {
            throw ValidationError("--ttl: a number and a unit (s, m, h, d), like 1h; or never")
        }
        switch unit {
        case "s": return .seconds(n)
        case "m": return .seconds(n * 60)
        case "h": return .seconds(n * 3600)
        case "d": return .seconds(n * 86400)
        default: throw ValidationError("--ttl: the unit is s, m, h or d")
        }
    }
}
