import Foundation
import NIOCore
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
        #expect(requestKinds.count == 11, "\(requestKinds.sorted())")
        #expect(responseKinds.count == 12, "\(responseKinds.sorted())")
        #expect(Set(0...13).isSubset(of: Set(codes.map(Int.init))), "\(codes.sorted())")
        #expect(codes.contains { $0 > 13 }, "a code this version does not define")
        #expect(sawEmptyBody.request && sawEmptyBody.response && sawFullPage)
    }
}

@Suite("Response frames written straight into a ByteBuffer")
struct ResponseFrameTests {
    /// The server's write path (`writeFrame`) must produce exactly the frame of `encode`:
    /// the GetPage answer takes its own stack-built route there, every other body the arena's.
    @Test(arguments: TestVectors.names("response"))
    func writeFrameMatchesEncode(_ name: String) throws {
        let response = try Wire.decodeResponse(TestVectors.bytes(name))
        var buffer = ByteBufferAllocator().buffer(capacity: 16)
        buffer.writeString("x")  // after other bytes, as in a buffer that already holds frames
        Wire.writeFrame(response, into: &buffer)
        #expect(buffer.readString(length: 1) == "x")
        #expect(buffer.readBytes(length: buffer.readableBytes) == Wire.frame(Wire.encode(response)), "\(name)")
    }

    @Test func anEmptyPageStillFrames() {
        let response = Wire.Response(requestId: 9, body: .getPage(Wire.GetPageResponse(page: [], lsn: 3)))
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        Wire.writeFrame(response, into: &buffer)
        #expect(buffer.readBytes(length: buffer.readableBytes) == Wire.frame([0x08, 0x09, 0x52, 0x02, 0x10, 0x03]))
    }
}
