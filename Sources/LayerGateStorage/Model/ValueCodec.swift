/// The byte form of a record value, shared by layer files and the WAL.
///
///     image: 0x00, 8192 bytes
///     delta: 0x01, will_init u8, patch count u16, then (offset u16, length u16, bytes)*
enum ValueCodec {
    static let imageTag: UInt8 = 0
    static let deltaTag: UInt8 = 1

    static func encode(_ value: RecordValue, into w: inout ByteWriter) {
        switch value {
        case .image(let bytes):
            w.u8(imageTag)
            w.bytes(bytes)
        case .delta(let d):
            w.u8(deltaTag)
            w.u8(d.willInit ? 1 : 0)
            w.u16(UInt16(d.patches.count))
            for p in d.patches {
                w.u16(UInt16(p.offset))
                w.u16(UInt16(p.data.count))
                w.bytes(p.data)
            }
        }
    }

    static func encodedSize(_ value: RecordValue) -> Int {
        switch value {
        case .image: return 1 + pageSize
        case .delta(let d): return 4 + d.patches.reduce(0) { $0 + 4 + $1.data.count }
        }
    }

    static func decode(_ payload: UnsafeRawBufferPointer) -> RecordValue? {
        var r = ByteReader(payload)
        guard let tag = try? r.u8() else { return nil }
        switch tag {
        case imageTag:
            guard let bytes = try? r.raw(pageSize), r.isAtEnd else { return nil }
            return .image(Array(bytes))
        case deltaTag:
            guard let willInit = try? r.u8(), let count = try? r.u16() else { return nil }
            var patches: [Patch] = []
            patches.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let off = try? r.u16(), let len = try? r.u16(), let bytes = try? r.raw(Int(len)) else { return nil }
                patches.append(Patch(offset: Int(off), data: Array(bytes)))
            }
            guard r.isAtEnd else { return nil }
            let d = Delta(willInit: willInit != 0, patches: patches)
            return (try? Record(key: .min, lsn: Lsn(1), value: .delta(d)).validate()) != nil ? .delta(d) : nil
        default:
            return nil
        }
    }
}
