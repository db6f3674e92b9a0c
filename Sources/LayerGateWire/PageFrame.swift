import NIOCore

extension Wire {
    /// Appends a GetPage answer as a whole frame, byte for byte what
    /// `writeFrame` makes of `Response(getPage: GetPageResponse(page, lsn))`,
    /// with the page written in place by `fill`: a cached page goes from the
    /// cache into the socket's buffer in one copy, and nothing is built around it.
    ///
    /// `fill` gets exactly `pageSize` bytes and returns the LSN the page was
    /// read at, or nil to write nothing (the buffer is then as it was; also
    /// when it throws).
    ///
    /// The layout is protobuf-c's, fields in number order, zeros left out:
    /// `[length u32 BE] [08 id] [52 n] [0A 80 40 page] [10 lsn]`. The page's
    /// offset must not depend on the LSN, so `n` (the GetPageResponse's size)
    /// takes as many bytes for any LSN: true for 8 KiB pages.
    public static func writePageFrame<E: Swift.Error>(
        requestId: UInt64, pageSize: Int, into buffer: inout ByteBuffer,
        fill: (UnsafeMutableRawBufferPointer) throws(E) -> UInt64?
    ) throws(E) -> Bool {
        let pageField = 1 + varintSize(UInt64(pageSize)) + pageSize
        let bodyLengthBytes = varintSize(UInt64(pageField))
        precondition(bodyLengthBytes == varintSize(UInt64(pageField + 11)), "a page whose frame layout depends on its LSN")
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))  // the frame's length, set below
        if requestId != 0 {
            buffer.writeInteger(UInt8(1 << 3 | 0))
            writeVarint(requestId, into: &buffer)
        }
        buffer.writeInteger(UInt8(10 << 3 | 2))  // Response.get_page
        let bodyLengthAt = buffer.writerIndex
        buffer.writeRepeatingByte(0, count: bodyLengthBytes)
        buffer.writeInteger(UInt8(1 << 3 | 2))  // GetPageResponse.page
        writeVarint(UInt64(pageSize), into: &buffer)
        var lsn: UInt64?
        var failure: E?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pageSize) { out in
            do throws(E) {
                lsn = try fill(UnsafeMutableRawBufferPointer(rebasing: out[0..<pageSize]))
            } catch {
                failure = error
            }
            return lsn == nil ? 0 : pageSize
        }
        guard let lsn, failure == nil else {
            buffer.moveWriterIndex(to: start)
            if let failure { throw failure }
            return false
        }
        var bodyLength = pageField
        if lsn != 0 {
            buffer.writeInteger(UInt8(2 << 3 | 0))  // GetPageResponse.lsn
            writeVarint(lsn, into: &buffer)
            bodyLength += 1 + varintSize(lsn)
        }
        var at = bodyLengthAt
        var v = UInt64(bodyLength)
        for i in 0..<bodyLengthBytes {
            buffer.setInteger(UInt8(truncatingIfNeeded: v & 0x7F) | (i < bodyLengthBytes - 1 ? 0x80 : 0), at: at)
            v >>= 7
            at += 1
        }
        buffer.setInteger(UInt32(buffer.writerIndex - start - 4), at: start)
        return true
    }

    static func varintSize(_ v: UInt64) -> Int {
        var n = 1
        var v = v >> 7
        while v != 0 {
            n += 1
            v >>= 7
        }
        return n
    }

    static func writeVarint(_ value: UInt64, into buffer: inout ByteBuffer) {
        var v = value
        while v >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        buffer.writeInteger(UInt8(v))
    }
}
