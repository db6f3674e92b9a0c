import NIOCore

extension Wire {
    /// Appends a GetPage request as a whole frame, byte for byte what
    /// protobuf-c packs for it: fields in number order, zeros, empty strings
    /// and a missing key left out, a string cut at its first NUL (protobuf-c
    /// gets C strings: so every request kind sends the same bytes for one
    /// string). `GetPageRequestFrameTests` compares the two over every shape.
    /// `writeFrame` takes this path for every GetPage:
    /// through protobuf-c, copying the tenant id and the token into a C
    /// message and packing it was a tenth of the async client's CPU.
    static func writeGetPageRequestFrame(requestId: UInt64, authToken: String, _ get: GetPageRequest,
                                         into buffer: inout ByteBuffer) {
        var token = authToken
        var tenant = get.tenantId
        token.withUTF8 { token in
            tenant.withUTF8 { tenant in
                let token = Self.cString(token), tenant = Self.cString(tenant)
                let keySize = get.key.map(Self.packedSize) ?? 0
                var bodySize = Self.bytesFieldSize(tenant.count) + Self.varintFieldSize(get.lsn)
                    + (get.latest ? 2 : 0) + Self.varintFieldSize(UInt64(get.waitMs))
                if get.key != nil { bodySize += Self.bytesFieldSize(keySize, evenIfEmpty: true) }
                let size = Self.varintFieldSize(requestId) + Self.bytesFieldSize(token.count)
                    + Self.bytesFieldSize(bodySize, evenIfEmpty: true)
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 4 + size) { out -> Int in
                    var w = FrameBytes(out)
                    w.uint32BigEndian(UInt32(truncatingIfNeeded: size), at: 0)
                    w.skip(4)
                    w.varintField(1, requestId)
                    w.bytesField(2, UnsafeRawBufferPointer(token))
                    w.byte(10 << 3 | 2)  // Request.get_page
                    w.varint(UInt64(bodySize))
                    w.bytesField(1, UnsafeRawBufferPointer(tenant))
                    if let key = get.key {
                        w.byte(2 << 3 | 2)
                        w.varint(UInt64(keySize))
                        w.varintField(1, UInt64(key.spcOid))
                        w.varintField(2, UInt64(key.dbOid))
                        w.varintField(3, UInt64(key.relNumber))
                        w.varintField(4, UInt64(key.fork))
                        w.varintField(5, UInt64(key.block))
                    }
                    w.varintField(3, get.lsn)
                    if get.latest {
                        w.byte(4 << 3 | 0)
                        w.byte(1)
                    }
                    w.varintField(5, UInt64(get.waitMs))
                    precondition(w.at == 4 + size, "a GetPage request frame of another size than computed")
                    return w.at
                }
            }
        }
    }

    /// The bytes before the first NUL, as protobuf-c sees a C string.
    private static func cString(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        guard let nul = bytes.firstIndex(of: 0) else { return bytes }
        return UnsafeBufferPointer(rebasing: bytes[..<nul])
    }

    private static func packedSize(_ key: PageKey) -> Int {
        varintFieldSize(UInt64(key.spcOid)) + varintFieldSize(UInt64(key.dbOid)) + varintFieldSize(UInt64(key.relNumber))
            + varintFieldSize(UInt64(key.fork)) + varintFieldSize(UInt64(key.block))
    }

    /// A varint field of number below 16: its key byte and value, or nothing for zero.
    private static func varintFieldSize(_ v: UInt64) -> Int { v == 0 ? 0 : 1 + varintSize(v) }

    /// A length-delimited field of number below 16: key byte, length, bytes.
    private static func bytesFieldSize(_ count: Int, evenIfEmpty: Bool = false) -> Int {
        count == 0 && !evenIfEmpty ? 0 : 1 + varintSize(UInt64(count)) + count
    }
}

extension FrameBytes {
    /// A varint field of number below 16; nothing for zero, as proto3 packs it.
    mutating func varintField(_ number: UInt8, _ v: UInt64) {
        guard v != 0 else { return }
        byte(number << 3 | 0)
        varint(v)
    }

    /// A length-delimited field of number below 16; nothing when empty, as proto3 packs it.
    mutating func bytesField(_ number: UInt8, _ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        byte(number << 3 | 2)
        varint(UInt64(bytes.count))
        take(bytes.count).copyMemory(from: bytes)
    }
}
