import CLayerGateProto

/// A look at an encoded message before anything is built from it, walking
/// the protobuf encoding with protobuf-c's own descriptors:
///
/// - every string field must be valid UTF-8 without a NUL byte. protobuf-c
///   unpacks strings as C strings, so "<tenant>\0garbage" would otherwise
///   arrive as "<tenant>", and it does not check UTF-8;
/// - the number of sub-messages is counted, and the walk stops past a limit,
///   so a frame of millions of empty records is refused before protobuf-c
///   allocates a struct for each.
///
/// Malformed encodings are left for protobuf-c to report.
public struct MessageShape: Sendable, Equatable {
    /// Sub-messages seen (nested ones included), up to the limit.
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
        while p < b.count {
            guard let key = varint(b, &p) else { return false }
            let number = UInt32(truncatingIfNeeded: key >> 3)
            switch key & 7 {
            case 0: guard varint(b, &p) != nil else { return false }
            case 1: p += 8
            case 5: p += 4
            case 2:
                guard let length = varint(b, &p), length <= UInt64(b.count - p) else { return false }
                let body = UnsafeRawBufferPointer(rebasing: b[p..<p + Int(length)])
                p += Int(length)
                guard let field = protobuf_c_message_descriptor_get_field(descriptor, number) else { continue }
                switch field.pointee.type {
                case PROTOBUF_C_TYPE_STRING:
                    if shape.badString == nil, !isCleanUTF8(body) { shape.badString = String(cString: field.pointee.name) }
                case PROTOBUF_C_TYPE_MESSAGE:
                    shape.messages += 1
                    guard shape.messages <= maxMessages else {
                        shape.tooManyMessages = true
                        return false
                    }
                    guard let sub = field.pointee.descriptor?.assumingMemoryBound(to: ProtobufCMessageDescriptor.self),
                          walk(body, sub, depth: depth + 1, maxMessages: maxMessages, &shape)
                    else { return false }
                default:
                    continue  // bytes, packed scalars
                }
            default:
                return false
            }
            guard p <= b.count else { return false }
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
            switch key & 7 {
            case 0: guard varint(b, &p) != nil else { return false }
            case 1: p += 8
            case 5: p += 4
            case 2:
                guard let length = varint(b, &p), length <= UInt64(b.count - p) else { return false }
                p += Int(length)
            default: return false
            }
        }
        return false
    }

    private static func varint(_ b: UnsafeRawBufferPointer, _ p: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while p < b.count && shift < 64 {
            let byte = b[p]
            p += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    private static func isCleanUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if bytes.allSatisfy({ $0 < 0x80 && $0 != 0 }) { return true }  // ASCII: the usual case, checked fast
        guard !bytes.contains(0) else { return false }
        return String(validating: bytes, as: UTF8.self) != nil
    }
}
