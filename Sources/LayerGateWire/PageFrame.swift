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
    /// `@inlinable`: called across modules with the caller's error type, it
    /// ran unspecialized (a generic metadata lookup on every cached GetPage).
    @inlinable
    public static func writePageFrame<E: Swift.Error>(
        requestId: UInt64, pageSize: Int, into buffer: inout ByteBuffer,
        fill: (UnsafeMutableRawBufferPointer) throws(E) -> UInt64?
    ) throws(E) -> Bool {
        let written = try writePageFrame(requestId: requestId, pageSize: pageSize, into: &buffer) {
            page throws(E) -> FilledPage? in try fill(page).map { FilledPage(lsn: $0, wrote: true) }
        }
        return written != nil
    }

    /// What `fill` of `writePageFrame(…leavingOut…)` did: the LSN the page
    /// was read at, and whether it wrote the page (false: the caller sends
    /// the page's bytes from where they are).
    public struct FilledPage {
        public let lsn: UInt64
        public let wrote: Bool

        @inlinable
        public init(lsn: UInt64, wrote: Bool) {
            self.lsn = lsn
            self.wrote = wrote
        }
    }

    /// How a frame went into the buffer.
    public enum PageFrameWritten: Equatable {
        /// Whole, page and all.
        case whole
        /// All but the page: it belongs before the frame's last `bytesAfterPage`
        /// bytes, and the frame's length counts it. The caller sends it there.
        case pageLeftOut(bytesAfterPage: Int)
    }

    /// The same, where `fill` may leave the page's bytes out of the buffer
    /// (`FilledPage.wrote` false): the frame is then appended without them,
    /// and the caller puts them in their place when it sends (a page shared
    /// from memory, sent from where it is). Nil when `fill` returns nil.
    @inlinable
    public static func writePageFrame<E: Swift.Error>(
        requestId: UInt64, pageSize: Int, into buffer: inout ByteBuffer,
        fill: (UnsafeMutableRawBufferPointer) throws(E) -> FilledPage?
    ) throws(E) -> PageFrameWritten? {
        let before = buffer.writerIndex
        var leftOut: Int?
        let pageField = 1 + varintSize(UInt64(pageSize)) + pageSize
        let bodyLengthBytes = varintSize(UInt64(pageField))
        precondition(bodyLengthBytes == varintSize(UInt64(pageField + 11)), "a page whose frame layout depends on its LSN")
        // The whole frame goes in with one capacity check: ByteBuffer's
        // checked writes, byte by byte, were a tenth of a cached GetPage's CPU.
        let most = 4 + 11 + 1 + bodyLengthBytes + pageField + 11
        var failure: E?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: most) { out -> Int in
            var w = FrameBytes(out)
            w.skip(4)  // the frame's length, set below
            if requestId != 0 {
                w.byte(1 << 3 | 0)
                w.varint(requestId)
            }
            w.byte(10 << 3 | 2)  // Response.get_page
            let bodyLengthAt = w.at
            w.skip(bodyLengthBytes)
            w.byte(1 << 3 | 2)  // GetPageResponse.page
            w.varint(UInt64(pageSize))
            let pageAt = w.at
            let filled: FilledPage?
            do throws(E) {
                filled = try fill(w.take(pageSize))
            } catch {
                failure = error
                return 0
            }
            guard let filled else { return 0 }
            if !filled.wrote { w.at = pageAt }  // what follows the page goes where it would have been
            var bodyLength = pageField
            if filled.lsn != 0 {
                w.byte(2 << 3 | 0)  // GetPageResponse.lsn
                let before = w.at
                w.varint(filled.lsn)
                bodyLength += 1 + w.at - before
            }
            w.varint(UInt64(bodyLength), at: bodyLengthAt, bytes: bodyLengthBytes)
            let frameLength = w.at - 4 + (filled.wrote ? 0 : pageSize)
            w.uint32BigEndian(UInt32(frameLength), at: 0)
            if !filled.wrote { leftOut = w.at - pageAt }
            return w.at
        }
        if let failure { throw failure }
        guard buffer.writerIndex != before else { return nil }
        return leftOut.map { .pageLeftOut(bytesAfterPage: $0) } ?? .whole
    }

    @usableFromInline
    static func varintSize(_ v: UInt64) -> Int {
        var n = 1
        var v = v >> 7
        while v != 0 {
            n += 1
            v >>= 7
        }
        return n
    }
}

/// Bytes written at increasing offsets into space known to be large enough
/// (`writePageFrame` asks the buffer for the most a frame can take). Every
/// write is checked against the space: the raw stores stay inside it even if
/// that sum were wrong.
@usableFromInline
struct FrameBytes {
    @usableFromInline let out: UnsafeMutableRawBufferPointer
    @usableFromInline var at = 0  // set back by a frame that leaves its page out

    @inlinable
    init(_ out: UnsafeMutableRawBufferPointer) { self.out = out }

    @inlinable
    mutating func byte(_ b: UInt8) {
        precondition(at < out.count, "a page frame larger than its reserved space")
        out[at] = b
        at += 1
    }

    @inlinable
    mutating func skip(_ n: Int) { at += n }

    @inlinable
    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            byte(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        byte(UInt8(v))
    }

    /// `value` as a varint padded to exactly `bytes` bytes (continuation bits on all but the last).
    @inlinable
    func varint(_ value: UInt64, at offset: Int, bytes: Int) {
        precondition(offset >= 0 && offset + bytes <= out.count, "a page frame larger than its reserved space")
        var v = value
        for i in 0..<bytes {
            out[offset + i] = UInt8(truncatingIfNeeded: v & 0x7F) | (i < bytes - 1 ? 0x80 : 0)
            v >>= 7
        }
    }

    @inlinable
    func uint32BigEndian(_ v: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= out.count, "a page frame larger than its reserved space")
        out.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// The next `n` bytes, for the caller to fill.
    @inlinable
    mutating func take(_ n: Int) -> UnsafeMutableRawBufferPointer {
        precondition(at + n <= out.count, "a page frame larger than its reserved space")
        defer { at += n }
        return UnsafeMutableRawBufferPointer(rebasing: out[at..<at + n])
    }
}
