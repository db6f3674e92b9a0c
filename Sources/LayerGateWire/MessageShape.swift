import CLayerGateProto
#if canImport(Glibc)
import Glibc
#endif

/// A look at an encoded message before anything is built from it, walking
/// the protobuf encoding with protobuf-c's own descriptors:
///
/// - every string field must be valid UTF-8 without a NUL byte. protobuf-c
///   unpacks strings as C strings, so "<tenant>\0garbage" would otherwise
///   arrive as "<tenant>", and it does not check UTF-8;
/// - every field that costs protobuf-c an allocation is counted (a
///   sub-message, a string or bytes field, even a singular one repeated, and
///   any unknown field, which it keeps as a struct and a copy), and the walk
///   stops past a limit: a frame of millions of empty records, repeated
///   strings or 2-byte unknown fields is refused before protobuf-c allocates
///   for each.
///
/// Malformed encodings are left for protobuf-c to report.
public struct MessageShape: Sendable, Equatable {
    /// Fields that take an allocation to decode (nested ones included), up to the limit.
    public var messages = 0
    /// The first string field that is not clean UTF-8, by field name.
    public var badString: String?
    /// True when the walk stopped at `maxMessages`.
    public var tooManyMessages = false

    /// Shape of an encoded `Request`.
    public static func ofRequest(_ bytes: UnsafeRawBufferPointer, maxMessages: Int) -> MessageShape {
        var shape = MessageShape()
        withUnsafePointer(to: layergate__v1__request__descriptor) { d in
            _ = walk(bytes, d, depth: 0, maxMessages: maxMessages, &shape)
        }
        return shape
    }

    /// Shape of an encoded `Response` (the clients' side of the same check).
    public static func ofResponse(_ bytes: UnsafeRawBufferPointer, maxMessages: Int) -> MessageShape {
        var shape = MessageShape()
        withUnsafePointer(to: layergate__v1__response__descriptor) { d in
            _ = walk(bytes, d, depth: 0, maxMessages: maxMessages, &shape)
        }
        return shape
    }

    /// False when the walk had to stop (malformed, too deep, too many messages).
    private static func walk(
        _ b: UnsafeRawBufferPointer, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>, depth: Int,
        maxMessages: Int, _ shape: inout MessageShape
    ) -> Bool {
        guard depth < 16 else { return false }
        var p = 0
        /// One more field that protobuf-c allocates for; false past the limit.
        func counted() -> Bool {
            shape.messages += 1
            if shape.messages > maxMessages { shape.tooManyMessages = true }
            return !shape.tooManyMessages
        }
        while p < b.count {
            guard let key = varint(b, &p) else { return false }
            let number = UInt32(truncatingIfNeeded: key >> 3)
            let field = protobuf_c_message_descriptor_get_field(descriptor, number)
            if field == nil { guard counted() else { return false } }
            guard let body = value(wireType: key & 7, b, &p) else { return false }
            guard key & 7 == 2, let field else { continue }
            switch field.pointee.type {
            case PROTOBUF_C_TYPE_STRING:
                guard counted() else { return false }
                if shape.badString == nil, !isCleanUTF8(body) { shape.badString = String(cString: field.pointee.name) }
            case PROTOBUF_C_TYPE_BYTES:
                guard counted() else { return false }
            case PROTOBUF_C_TYPE_MESSAGE:
                guard counted(),
                      let sub = field.pointee.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self),
                      walk(body, sub, depth: depth + 1, maxMessages: maxMessages, &shape)
                else { return false }
            default:
                continue  // packed scalars: one array per field, counted by protobuf-c's own first pass
            }
        }
        return true
    }

    /// Whether an encoded `Request` holds a PutRecords body, looked at before
    /// it is decoded (the server keeps puts in order even when it decodes
    /// them off the event loop). False for anything malformed.
    public static func isPutRecordsRequest(_ b: UnsafeRawBufferPointer) -> Bool {
        let putRecords: UInt64 = 11
        var p = 0
        while p < b.count {
            guard let key = varint(b, &p) else { return false }
            if key >> 3 == putRecords { return true }
            guard value(wireType: key & 7, b, &p) != nil else { return false }
        }
        return false
    }

    /// Steps over one field's value; a length-delimited one is returned
    /// (empty for the others). Nil when it runs past the end or the wire
    /// type is not one proto3 writes.
    private static func value(wireType: UInt64, _ b: UnsafeRawBufferPointer, _ p: inout Int) -> UnsafeRawBufferPointer? {
        let empty = UnsafeRawBufferPointer(rebasing: b[b.count...])
        switch wireType {
        case 0: return varint(b, &p) == nil ? nil : empty
        case 1, 5:
            let width = wireType == 1 ? 8 : 4
            guard b.count - p >= width else { return nil }
            p += width
            return empty
        case 2:
            guard let length = varint(b, &p), length <= UInt64(b.count - p) else { return nil }
            defer { p += Int(length) }
            return UnsafeRawBufferPointer(rebasing: b[p..<p + Int(length)])
        default: return nil
        }
    }

    /// True when no byte is 0 or ≥ 0x80: eight bytes per step (a token is
    /// checked on every request that carries one).
    private static func isAsciiWithoutNul(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let high: UInt64 = 0x8080_8080_8080_8080, ones: UInt64 = 0x0101_0101_0101_0101
        var i = 0
        while i + 8 <= bytes.count {
            let w = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            // A high bit set, or a zero byte (the classic has-zero-byte test).
            if w & high != 0 || (w &- ones) & ~w & high != 0 { return false }
            i += 8
        }
        while i < bytes.count {
            if bytes[i] == 0 || bytes[i] >= 0x80 { return false }
            i += 1
        }
        return true
    }

    /// What the first bytes of an encoded `Request` say about its token.
    public enum TokenPeek: Equatable, Sendable {
        case token(String)
        /// It has none where encoders put it (after request_id, before the body).
        case none
        /// The bytes end before that can be told.
        case needMore
    }

    /// Reads `auth_token` from the start of an encoded `Request`, before the
    /// rest of it has arrived: the server picks a large frame's budget by who
    /// sent it. Encoders write fields in number order, so the token comes
    /// right after request_id; anything else there is taken as no token.
    public static func peekAuthToken(_ b: UnsafeRawBufferPointer) -> TokenPeek {
        let maxTokenBytes: UInt64 = 8192
        var p = 0
        while p < b.count {
            guard let key = varint(b, &p) else { return .needMore }
            switch key {
            case 1 << 3 | 0:  // request_id
                guard varint(b, &p) != nil else { return .needMore }
            case 2 << 3 | 2:  // auth_token
                guard let length = varint(b, &p) else { return .needMore }
                guard length <= maxTokenBytes else { return .none }
                guard length <= UInt64(b.count - p) else { return .needMore }
                return .token(String(decoding: UnsafeRawBufferPointer(rebasing: b[p..<p + Int(length)]), as: UTF8.self))
            default:
                return .none
            }
        }
        return .needMore
    }

    /// When an encoded `Request` starts with its request id (if any) and then
    /// `token` as its auth_token, and no field after them sets either again:
    /// the request id and the bytes after the token. Nil otherwise.
    static func afterToken(_ token: UnsafeBufferPointer<UInt8>, in b: UnsafeRawBufferPointer)
        -> (requestId: UInt64, rest: UnsafeRawBufferPointer)? {
        var p = 0
        var requestId: UInt64 = 0
        // Keys and lengths as protobuf-c reads them: at most 5 bytes (it refuses longer ones).
        guard var key = varint(b, &p, maxBytes: 5) else { return nil }
        if key == 1 << 3 | 0 {
            guard let id = varint(b, &p), let next = varint(b, &p, maxBytes: 5) else { return nil }
            (requestId, key) = (id, next)
        }
        guard key == 2 << 3 | 2, let length = varint(b, &p, maxBytes: 5), length == UInt64(token.count), token.count <= b.count - p,
              let here = b.baseAddress, let known = token.baseAddress, memcmp(here + p, known, token.count) == 0
        else { return nil }
        let rest = UnsafeRawBufferPointer(rebasing: b[(p + token.count)...])
        // The last value of a field wins: a later request id or token would change the answer.
        var q = 0
        while q < rest.count {
            guard let k = varint(rest, &q), k >> 3 != 1, k >> 3 != 2, value(wireType: k & 7, rest, &q) != nil else { return nil }
        }
        return (requestId, rest)
    }

    /// A varint at `p` of at most `maxBytes` bytes (protobuf-c reads keys and lengths of 5 at most).
    static func varint(_ b: UnsafeRawBufferPointer, _ p: inout Int, maxBytes: UInt64 = 10) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while p < b.count && shift < 7 * maxBytes {
            let byte = b[p]
            p += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    private static func isCleanUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if isAsciiWithoutNul(bytes) { return true }  // the usual case (ids, tokens), checked a word at a time
        guard !bytes.contains(0) else { return false }
        return String(validating: bytes, as: UTF8.self) != nil
    }
}
