extension Wire {
    /// Reads `raw` as a plain PutRecords of images straight from the frame;
    /// nil for anything else (decode it with `decodeCheckedRequest`).
    ///
    /// Why: protobuf-c copies each image into memory of its own, and the
    /// `[UInt8]` of the request is a second copy; here each image is copied
    /// once, and nothing else is allocated for it: a put of 64 images took
    /// about 300 µs to decode through protobuf-c, 60 µs here
    /// (docs/ARCHITECTURE.md, "The path of a PutRecords").
    ///
    /// The plain form: each singular field at most once, with the wire type
    /// and range its type has; a tenant id of 32 hex digits; records with an
    /// image or no value (a delta is left to the decoder); no unknown field;
    /// no more allocations than protobuf-c would be allowed (`maxMessages`,
    /// counted as `MessageShape` counts them). A token is taken as sent when
    /// it is clean UTF-8 without a NUL, `knownToken` itself when it is that
    /// one. Where this reads a frame, it reads what `decodeCheckedRequest`
    /// does (the fuzz target `request` checks that on every input).
    public static func readPutRecordsInPlace(_ raw: UnsafeRawBufferPointer, knownToken: String?, maxMessages: Int) -> Request? {
        guard let request = PlainRequest.read(raw, bodyField: 11) else { return nil }
        // protobuf-c's allocations: the body, the tenant id, the token; then each record's (`readPutBody`).
        let allocations = request.token == nil ? 2 : 3
        guard maxMessages >= allocations,
              let (tenantId, records) = readPutBody(request.body, maxRecordAllocations: maxMessages - allocations)
        else { return nil }
        var authToken = ""
        if let token = request.token {
            guard let t = tokenString(token, known: knownToken) else { return nil }
            authToken = t
        }
        return Request(requestId: request.requestId, authToken: authToken,
                       body: .putRecords(PutRecordsRequest(tenantId: tenantId, records: records)))
    }

    private static func readPutBody(_ b: UnsafeRawBufferPointer, maxRecordAllocations: Int) -> (String, [Record])? {
        var tenant: UnsafeRawBufferPointer?
        var records: [Record] = []
        var allocations = 0
        let plain = PlainFields.read(b) { field in
            switch field {
            case .bytes(1, let t) where tenant == nil:
                guard isHexTenant(t) else { return false }  // before the records are copied, where it comes first
                tenant = t
            case .bytes(2, let r):
                guard let (record, count) = readRecord(r) else { return false }
                allocations += count
                guard allocations <= maxRecordAllocations else { return false }
                records.append(record)
            default:
                return false
            }
            return true
        }
        guard plain, let tenant else { return nil }
        return (String(decoding: tenant, as: UTF8.self), records)
    }

    private static func isHexTenant(_ t: UnsafeRawBufferPointer) -> Bool {
        guard t.count == 32 else { return false }
        return (0..<4).allSatisfy { hexWord(t.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) != nil }
    }

    /// A record and the allocations protobuf-c makes for it (itself, its key, its image).
    private static func readRecord(_ b: UnsafeRawBufferPointer) -> (Record, Int)? {
        var keyBytes: UnsafeRawBufferPointer?
        var lsn: UInt64?
        var image: UnsafeRawBufferPointer?
        let plain = PlainFields.read(b) { field in
            switch field {
            case .bytes(1, let k) where keyBytes == nil: keyBytes = k
            case .varint(2, let v) where lsn == nil: lsn = v
            case .bytes(3, let i) where image == nil: image = i
            default: return false
            }
            return true
        }
        guard plain else { return nil }
        var key: PageKey?
        if let keyBytes {
            guard let k = readPageKey(keyBytes) else { return nil }
            key = k
        }
        let record = Record(key: key, lsn: lsn ?? 0, value: image.map { .image(Array($0)) })
        return (record, 1 + (keyBytes == nil ? 0 : 1) + (image == nil ? 0 : 1))
    }

    /// The token as sent; nil when protobuf-c would not read it as sent (a NUL) or it is not UTF-8.
    private static func tokenString(_ t: UnsafeRawBufferPointer, known: String?) -> String? {
        if let known, PlainRequest.isKnown(t, known) { return known }
        guard !t.contains(0) else { return nil }
        return String(validating: t, as: UTF8.self)
    }
}
