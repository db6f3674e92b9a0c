import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `s3://BUCKET/PREFIX` at an S3-compatible endpoint, through libcurl with
/// its own SigV4 signing (`HTTPExchange`). A layer object is written with
/// `If-None-Match: *`, so a second PUT of its key gets 412 and never replaces
/// it; the object carries its CRC-32C as `x-amz-meta-crc32c`, which tells a
/// retry of the same bytes from another object under that key.
public final class S3RemoteStore: RemoteStore {
    public struct Credentials: Sendable {
        public var accessKeyId: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil) {
            (self.accessKeyId, self.secretAccessKey, self.sessionToken) = (accessKeyId, secretAccessKey, sessionToken)
        }

        /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optionally) AWS_SESSION_TOKEN.
        public static func fromEnvironment(_ env: [String: String]) throws(RemoteError) -> Credentials {
            guard let id = env["AWS_ACCESS_KEY_ID"], !id.isEmpty, let secret = env["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
                throw .badConfiguration("s3:// needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
            }
            return Credentials(accessKeyId: id, secretAccessKey: secret, sessionToken: env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        }
    }

    public let description: String
    private let endpoint: String
    private let bucket: String
    /// Without slashes at either end; "" for the bucket's root.
    private let prefix: String
    private let signing: HTTPExchange.Signing
    private let sessionToken: String?

    public init(bucket: String, prefix: String, endpoint: String?, region: String, credentials: Credentials) throws(RemoteError) {
        guard !bucket.isEmpty, bucket.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }) else {
            throw .badConfiguration("bad bucket name '\(StorageError.printable(bucket))'")
        }
        guard !region.isEmpty, region.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw .badConfiguration("bad region '\(StorageError.printable(region))'")
        }
        let base = endpoint ?? "https://s3.\(region).amazonaws.com"
        guard base.hasPrefix("http://") || base.hasPrefix("https://") else {
            throw .badConfiguration("--s3-endpoint must be an http:// or https:// URL, not '\(StorageError.printable(base))'")
        }
        self.endpoint = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.bucket = bucket
        self.prefix = prefix.split(separator: "/").joined(separator: "/")
        signing = HTTPExchange.Signing(sigv4: "aws:amz:\(region):s3",
                                       userpwd: credentials.accessKeyId + ":" + credentials.secretAccessKey)
        sessionToken = credentials.sessionToken
        description = "s3://\(bucket)/\(self.prefix) at \(self.endpoint)"
    }

    public func putIfAbsent(_ key: String, from source: LocalObject) throws(RemoteError) -> RemotePut {
        let headers = ["If-None-Match: *", "x-amz-meta-crc32c: " + Self.hex(source.crc32c), "Content-Type: application/octet-stream"]
        let answer = try withBody(of: source, key: key) { body throws(RemoteError) in
            try request("PUT", key, headers: headers, body: body)
        }
        switch answer.status {
        case 200: return .created
        case 412:
            let head = try request("HEAD", key)
            guard head.status == 200 else { throw unexpected("HEAD", key, head) }
            let same = head.contentLength == source.size && head.metaCrc32c == source.crc32c
            return same ? .sameExists : .differentExists
        default:
            throw unexpected("PUT", key, answer)  // 409 (a concurrent conditional PUT) included: retried later
        }
    }

    public func replace(_ key: String, bytes: [UInt8]) throws(RemoteError) {
        let answer = try request("PUT", key, headers: ["Content-Type: application/json"], body: .bytes(bytes))
        guard answer.status == 200 else { throw unexpected("PUT", key, answer) }
    }

    public func create(_ key: String, bytes: [UInt8]) throws(RemoteError) -> Bool {
        let answer = try request("PUT", key, headers: ["If-None-Match: *", "Content-Type: application/json"], body: .bytes(bytes))
        switch answer.status {
        case 200: return true
        case 412: return false
        default: throw unexpected("PUT", key, answer)
        }
    }

    public func get(_ key: String, limit: Int) throws(RemoteError) -> [UInt8]? {
        let answer = try request("GET", key, maxBody: limit + 1)
        switch answer.status {
        case 200:
            guard answer.body.count <= limit else {
                throw .corruptIndex(key: key, reason: "more than \(limit) bytes")
            }
            return answer.body
        case 404: return nil
        default: throw unexpected("GET", key, answer)
        }
    }

    public func download(_ key: String, into fs: any FileSystem, path: String) throws(RemoteError) -> LocalObject? {
        // The body goes straight into the file: libcurl needs a kernel descriptor.
        guard fs.descriptorsAreReal else { throw .badConfiguration("S3 downloads need the machine's filesystem") }
        let fd: Int32
        do throws(SystemError) { fd = try fs.open(path, .createExclusive) } catch {
            throw .failed("download", key, "create \(FileLabel.describe(path)): \(error)", errno: error.errno, local: true)
        }
        var keep = false
        defer {
            fs.close(fd)
            if !keep { try? fs.unlink(path) }
        }
        let answer = try request("GET", key, into: fd)
        switch answer.status {
        case 200: break
        case 404: return nil
        default: throw unexpected("GET", key, answer)
        }
        do throws(SystemError) { try fs.fsync(fd) } catch {
            throw .failed("download", key, "fsync: \(error)", errno: error.errno, local: true)
        }
        let object: LocalObject
        do throws(StorageError) { object = try LocalObject.measure(fs: fs, path: path) } catch {
            throw .failed("download", key, error, local: true)
        }
        keep = true
        return object
    }

    public func head(_ key: String) throws(RemoteError) -> ObjectHead? {
        let answer = try request("HEAD", key)
        switch answer.status {
        case 200:
            guard let size = answer.contentLength else { throw unexpected("HEAD", key, answer) }
            return ObjectHead(size: size, crc32c: answer.metaCrc32c)
        case 404: return nil
        default: throw unexpected("HEAD", key, answer)
        }
    }

    public func list(prefix listed: String) throws(RemoteError) -> [String] {
        guard listed.hasSuffix("/"), !listed.hasPrefix("/") else { throw .badConfiguration("bad listing prefix '\(listed)'") }
        let full = fullKey(listed)
        var keys: [String] = []
        var token: String?
        repeat {
            // Query parameters in canonical (sorted) order, as SigV4 signs them.
            var query = ""
            if let token { query += "continuation-token=" + Self.encode(token, keepSlash: false) + "&" }
            query += "delimiter=%2F&list-type=2&prefix=" + Self.encode(full, keepSlash: false)
            let url = "\(endpoint)/\(Self.encode(bucket, keepSlash: false))?\(query)"
            let answer = try exchange("GET", url, headers: [], body: .none, into: -1, maxBody: 16 << 20)
            guard answer.status == 200 else { throw unexpected("LIST", listed, answer) }
            let xml = String(decoding: answer.body, as: UTF8.self)
            for k in Self.elements("Key", in: xml) where k.hasPrefix(full) {
                keys.append(listed + k.dropFirst(full.count))
            }
            token = Self.elements("IsTruncated", in: xml).first == "true" ? Self.elements("NextContinuationToken", in: xml).first : nil
        } while token != nil
        return keys
    }

    public func delete(_ key: String) throws(RemoteError) {
        let answer = try request("DELETE", key)
        guard answer.status == 204 || answer.status == 200 || answer.status == 404 else { throw unexpected("DELETE", key, answer) }
    }

    /// Creates the bucket if it is missing (tests and first runs against a local endpoint).
    public func createBucket() throws(RemoteError) {
        let answer = try exchange("PUT", "\(endpoint)/\(Self.encode(bucket, keepSlash: false))", headers: [], body: .none,
                                  into: -1, maxBody: 1 << 16)
        guard answer.status == 200 || answer.status == 409 else { throw unexpected("CREATE BUCKET", bucket, answer) }
    }

    // MARK: requests

    private func fullKey(_ key: String) -> String { prefix.isEmpty ? key : prefix + "/" + key }

    private func request(_ method: String, _ key: String, headers: [String] = [], body: HTTPExchange.Body = .none,
                         into fd: Int32 = -1, maxBody: Int = 1 << 20) throws(RemoteError) -> HTTPExchange.Answer {
        let url = "\(endpoint)/\(Self.encode(bucket, keepSlash: false))/\(Self.encode(fullKey(key), keepSlash: true))"
        return try exchange(method, url, headers: headers, body: body, into: fd, maxBody: maxBody)
    }

    private func exchange(_ method: String, _ url: String, headers: [String], body: HTTPExchange.Body, into fd: Int32,
                          maxBody: Int) throws(RemoteError) -> HTTPExchange.Answer {
        let all = headers + (sessionToken.map { ["x-amz-security-token: " + $0] } ?? [])
        return try HTTPExchange.perform(method, url, signing: signing, headers: all, body: body, into: fd, maxBody: maxBody)
    }

    /// Runs `send` with the object's bytes as a request body: its descriptor
    /// on the machine's filesystem, or its bytes read into memory elsewhere.
    private func withBody(of source: LocalObject, key: String,
                          _ send: (HTTPExchange.Body) throws(RemoteError) -> HTTPExchange.Answer) throws(RemoteError) -> HTTPExchange.Answer {
        let file: RawFile
        let body: HTTPExchange.Body
        do throws(StorageError) {
            file = try RawFile.open(source.fs, source.path, .readOnly)
            guard try file.size() == source.size else {
                throw .corruptLayer(file: source.path, reason: "its size changed while it was uploaded")
            }
            body = source.fs.descriptorsAreReal ? .file(fd: file.fd, offset: 0, length: source.size)
                : .bytes(try file.read(count: source.size, at: 0))
        } catch {
            throw .failed("upload", key, error, local: true)
        }
        defer { file.close() }
        return try send(body)
    }

    private func unexpected(_ op: String, _ key: String, _ answer: HTTPExchange.Answer) -> RemoteError {
        .unavailable(operation: op, key: key, reason: "HTTP \(answer.status): \(Self.elements("Message", in: answer.text).first ?? answer.text)")
    }

    // MARK: text

    static func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }

    /// RFC 3986 percent-encoding of everything but unreserved characters (and "/" in a path).
    static func encode(_ s: String, keepSlash: Bool) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if (b < 0x80 && (c.isLetter || c.isNumber)) || c == "-" || c == "_" || c == "." || c == "~" || (keepSlash && c == "/") {
                out.append(c)
            } else {
                out += "%" + String(b >> 4, radix: 16, uppercase: true) + String(b & 15, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// The texts of every `<name>…</name>` in `xml`, entities decoded. Enough for
    /// ListObjectsV2 and error bodies; the keys this server cares about are plain.
    static func elements(_ name: String, in xml: String) -> [String] {
        var out: [String] = []
        var rest = Substring(xml)
        let open = "<\(name)>", close = "</\(name)>"
        while let start = rest.range(of: open), let end = rest[start.upperBound...].range(of: close) {
            let raw = rest[start.upperBound..<end.lowerBound]
            out.append(raw.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
                .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
                .replacingOccurrences(of: "&amp;", with: "&"))
            rest = rest[end.upperBound...]
        }
        return out
    }
}
