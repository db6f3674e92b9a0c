import NIOCore
import Testing

@testable import LayerGateWire

/// `writeFrame` writes a GetPage request itself, not through protobuf-c: the
/// bytes must be protobuf-c's, for every shape a request can take, and the
/// server must read them back as the request that was sent.
@Suite("GetPage request frames")
struct GetPageRequestFrameTests {
    static let ids: [UInt64] = [0, 1, 127, 128, 16_383, 16_384, 1 << 32, .max]
    static let tokens = ["", "t", String(repeating: "j", count: 127), String(repeating: "w", count: 128),
                         String(repeating: "x", count: 16_384), "tökén", "ab\0cd", "\0"]
    static let tenants = ["", "0123456789abcdef0123456789abcdef", String(repeating: "a", count: 300), "ténant",
                          "0123456789abcdef0123456789abcdef\0junk"]
    static let keys: [Wire.PageKey?] = [
        nil, Wire.PageKey(spcOid: 0, dbOid: 0, relNumber: 0, fork: 0, block: 0),
        Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 2000, fork: 1, block: 127),
        Wire.PageKey(spcOid: .max, dbOid: 128, relNumber: 1 << 21, fork: .max, block: .max),
    ]

    static func frameViaProtobufC(_ r: Wire.Request) -> [UInt8] { Wire.frame(Wire.encode(r)) }

    static func frameWritten(_ r: Wire.Request, after prefix: [UInt8] = []) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 8)  // small: the write must grow it
        buffer.writeBytes(prefix)
        Wire.writeFrame(r, into: &buffer)
        return Array(buffer.readableBytesView.dropFirst(prefix.count))
    }

    @Test func everyShapeIsWrittenAsProtobufCPacksIt() throws {
        var checked = 0
        for id in Self.ids {
            for token in Self.tokens {
                for tenant in Self.tenants {
                    for key in Self.keys {
                        for (lsn, latest) in [(UInt64(0), false), (0, true), (1, false), (.max, true), (1 << 35, false)] {
                            for waitMs: UInt32 in [0, 1, 300, .max] {
                                let r = Wire.Request(requestId: id, authToken: token,
                                                     body: .getPage(Wire.GetPageRequest(tenantId: tenant, key: key, lsn: lsn,
                                                                                         latest: latest, waitMs: waitMs)))
                                let written = Self.frameWritten(r, after: checked % 3 == 0 ? [] : [1, 2, 3])
                                #expect(written == Self.frameViaProtobufC(r), "\(id) \(token.count) \(tenant) \(String(describing: key)) \(lsn) \(latest) \(waitMs)")
                                // Read back as the server reads it: the request that was sent
                                // (its strings as C strings, up to their first NUL, as protobuf-c sends them).
                                let decoded = try written.dropFirst(4).withUnsafeBytes { try Wire.decodeRequest($0) }
                                #expect(decoded == Self.asCStrings(r))
                                checked += 1
                            }
                        }
                    }
                }
            }
        }
        let shapes = Self.ids.count * Self.tokens.count * Self.tenants.count * Self.keys.count * 5 * 4
        #expect(checked == shapes)
    }

    static func asCStrings(_ r: Wire.Request) -> Wire.Request {
        func cut(_ s: String) -> String { String(decoding: s.utf8.prefix { $0 != 0 }, as: UTF8.self) }
        guard case .getPage(var get)? = r.body else { return r }
        get.tenantId = cut(get.tenantId)
        return Wire.Request(requestId: r.requestId, authToken: cut(r.authToken), body: .getPage(get))
    }

    /// Requests one after another in one buffer, as a client queues a batch.
    @Test func aBatchOfFramesReadsBackInOrder() throws {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        let sent = (0..<1000).map { (i: Int) -> Wire.Request in
            let key = Wire.PageKey(spcOid: 1663, dbOid: 5, relNumber: 2000, fork: 0, block: UInt32(i))
            let get = Wire.GetPageRequest(tenantId: "0123456789abcdef0123456789abcdef", key: key,
                                          lsn: UInt64(i) << 20, latest: i % 3 == 0, waitMs: UInt32(i % 5))
            return Wire.Request(requestId: UInt64(i) + 1, authToken: i % 2 == 0 ? "" : "token", body: .getPage(get))
        }
        for r in sent { Wire.writeFrame(r, into: &buffer) }
        var read: [Wire.Request] = []
        while let n = buffer.readInteger(endianness: .big, as: UInt32.self), let body = buffer.readBytes(length: Int(n)) {
            read.append(try body.withUnsafeBytes { try Wire.decodeRequest($0) })
        }
        #expect(read == sent)
        #expect(buffer.readableBytes == 0)
    }
}
