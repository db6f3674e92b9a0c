#if canImport(Glibc)
import Glibc
#endif

/// The fields of an encoded message, read as protobuf-c reads them but only
/// where that is unambiguous: keys and lengths of at most 5 bytes, varints
/// whose value fits 64 bits, and only the varint and length-delimited wire types.
struct PlainFields {
    enum Field {
        case varint(UInt64, UInt64)
        case bytes(UInt64, UnsafeRawBufferPointer)
    }

    private let b: UnsafeRawBufferPointer
    private var p = 0

    private init(_ b: UnsafeRawBufferPointer) { self.b = b }

    /// Gives every field of `b` to `take` in turn; false as soon as the bytes
    /// are not plain fields or `take` refuses one (a field it does not read
    /// this way, or one seen twice).
    @inline(__always)
    static func read(_ b: UnsafeRawBufferPointer, _ take: (Field) -> Bool) -> Bool {
        var reader = PlainFields(b)
        while reader.p < b.count {
            guard let field = reader.next(), take(field) else { return false }
        }
        return true
    }

    private mutating func next() -> Field? {
        guard let key = varint(maxBytes: 5) else { return nil }
        switch key & 7 {
        case 0:
            guard let v = varint(maxBytes: 10) else { return nil }
            return .varint(key >> 3, v)
        case 2:
            guard let length = varint(maxBytes: 5), length <= UInt64(b.count - p) else { return nil }
            defer { p += Int(length) }
            return .bytes(key >> 3, UnsafeRawBufferPointer(rebasing: b[p..<p + Int(length)]))
        default:
            return nil
        }
    }

    /// `MessageShape.varint`, and nil when a tenth byte would carry bits past
    /// 64 (protobuf-c drops them; such a value is left to it).
    private mutating func varint(maxBytes: UInt64) -> UInt64? {
        let start = p
        guard let v = MessageShape.varint(b, &p, maxBytes: maxBytes) else { return nil }
        return p - start == 10 && b[p - 1] > 1 ? nil : v
    }
}

/// A Request around its body, in the plain form the in-place readers take:
/// `request_id`, `auth_token` and one body field, each at most once, nothing else.
struct PlainRequest {
    var requestId: UInt64
    var token: UnsafeRawBufferPointer?
    var body: UnsafeRawBufferPointer

    @inline(__always)
    static func read(_ raw: UnsafeRawBufferPointer, bodyField: UInt64) -> PlainRequest? {
        var requestId: UInt64?
        var token: UnsafeRawBufferPointer?
        var body: UnsafeRawBufferPointer?
        let plain = PlainFields.read(raw) { field in
            switch field {
            case .varint(1, let v) where requestId == nil: requestId = v
            case .bytes(2, let b) where token == nil: token = b
            case .bytes(bodyField, let b) where body == nil: body = b
            default: return false
            }
            return true
        }
        guard plain, let body else { return nil }
        return PlainRequest(requestId: requestId ?? 0, token: token, body: body)
    }

    /// Whether `token` holds the bytes of `known`.
    static func isKnown(_ token: UnsafeRawBufferPointer, _ known: String) -> Bool {
        var known = known
        return known.withUTF8 { k in
            guard token.count == k.count, let a = token.baseAddress, let b = k.baseAddress else { return token.count == k.count }
            return memcmp(a, b, token.count) == 0
        }
    }
}
