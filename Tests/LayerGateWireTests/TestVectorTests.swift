import Foundation
import Testing

@testable import LayerGateWire

/// Protocol/testdata holds Requests and Responses encoded by protoc's own
/// encoder (scripts/gen-testdata.sh) from readable .txtpb files. The C client's
/// tests decode and re-encode the same files: both languages agree on the bytes.
enum TestVectors {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/testdata")

    static func names(_ kind: String) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return files.filter { $0.hasPrefix(kind + "-") && $0.hasSuffix(".bin") }.sorted()
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
    }
}

@Suite("Cross-language test vectors (Protocol/testdata)")
struct TestVectorTests {
    @Test(arguments: TestVectors.names("request"))
    func requestDecodesAndReencodesToTheSameBytes(_ name: String) throws {
        let bytes = try TestVectors.bytes(name)
        #expect(Wire.encode(try Wire.decodeRequest(bytes)) == bytes, "\(name)")
    }

    @Test(arguments: TestVectors.names("response"))
    func responseDecodesAndReencodesToTheSameBytes(_ name: String) throws {
        let bytes = try TestVectors.bytes(name)
        let response = try Wire.decodeResponse(bytes)
        #expect(Wire.encode(response) == bytes, "\(name)")
        // response-error-<code>.bin carries that code: the names are a second check on the decoder.
        if case .error(let e) = response.body, name != "response-error-unknown-code.bin" {
            #expect(name == "response-error-\(e.code.name.lowercased().replacingOccurrences(of: "_", with: "-")).bin")
        }
    }

    /// One vector per message type and per error code, so that a new message
    /// or code cannot be added without a vector for it.
    @Test func theVectorsCoverEveryMessageAndErrorCode() throws {
        var requestKinds = Set<String>(), responseKinds = Set<String>(), codes = Set<Int32>()
        var sawEmptyBody = (request: false, response: false), sawFullPage = false
        for name in TestVectors.names("request") {
            guard let body = try Wire.decodeRequest(TestVectors.bytes(name)).body else { sawEmptyBody.request = true; continue }
            requestKinds.insert(String(describing: body).prefix { $0 != "(" }.description)
        }
        for name in TestVectors.names("response") {
            guard let body = try Wire.decodeResponse(TestVectors.bytes(name)).body else { sawEmptyBody.response = true; continue }
            responseKinds.insert(String(describing: body).prefix { $0 != "(" }.description)
            if case .error(let e) = body { codes.insert(e.code.rawValue) }
            if case .getPage(let p) = body, p.page.count == 8192 { sawFullPage = true }
        }
        #expect(requestKinds.count == 9, "\(requestKinds.sorted())")
        #expect(responseKinds.count == 10, "\(responseKinds.sorted())")
        #expect(Set(0...11).isSubset(of: Set(codes.map(Int.init))), "\(codes.sorted())")
        #expect(codes.contains { $0 > 11 }, "a code this version does not define")
        #expect(sawEmptyBody.request && sawEmptyBody.response && sawFullPage)
    }
}
