/// LayerGate's redo: deterministic application of deltas to a page.
public enum Redo {
    /// Applies one delta to `page` (exactly `pageSize` bytes). The delta has been validated.
    public static func apply(_ delta: Delta, to page: UnsafeMutableRawBufferPointer) {
        if delta.willInit { page.initializeMemory(as: UInt8.self, repeating: 0) }
        for p in delta.patches {
            p.data.withUnsafeBytes { src in
                page.baseAddress!.advanced(by: p.offset).copyMemory(from: src.baseAddress!, byteCount: src.count)
            }
        }
    }

    /// Applies an encoded delta payload (as stored in layers and the WAL; see
    /// `ValueCodec`) without materialising it. Returns false on malformed bytes.
    static func applyEncoded(_ payload: UnsafeRawBufferPointer, to page: UnsafeMutableRawBufferPointer) -> Bool {
        var r = ByteReader(payload)
        guard let tag = try? r.u8(), tag == ValueCodec.deltaTag,
              let willInit = try? r.u8(), let count = try? r.u16()
        else { return false }
        if willInit != 0 { page.initializeMemory(as: UInt8.self, repeating: 0) }
        for _ in 0..<count {
            guard let off = try? r.u16(), let len = try? r.u16(),
                  Int(off) + Int(len) <= pageSize,
                  let bytes = try? r.raw(Int(len))
            else { return false }
            page.baseAddress!.advanced(by: Int(off)).copyMemory(from: bytes.baseAddress!, byteCount: Int(len))
        }
        return r.isAtEnd
    }
}
