import CSystemShims
import Foundation
import LayerGateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The io_uring shim the event loop reads GetPage misses with
/// (`lg_uring_*`), on its own against a real file: reads queued and entered
/// together, each read's tag and result, the bytes pread gives, errors as
/// -errno (a failing read does not stop the others), and the eventfd signalled.
@Suite("io_uring shim")
struct UringShimTests {
    @Test func readsAreTaggedAndMatchPread() throws {
        let dir = TemporaryDirectory("uring")
        let path = dir.path + "/file"
        let bytes = (0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        try #require(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        try Self.withRing { ring, efd in try Self.readFourAndTwoThatFail(ring, efd, fd: fd, bytes: bytes) }
    }

    private static func readFourAndTwoThatFail(_ ring: OpaquePointer, _ efd: Int32, fd: Int32, bytes: [UInt8]) throws {
        // Four reads of 8 KiB, a read on a bad descriptor, and one wholly past the end of the file.
        let offsets: [UInt64] = [0, 8192, 40960, 57344]
        let buffers = (0..<6).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096) }
        defer { for b in buffers { b.deallocate() } }
        // The bad descriptor in the middle: the reads queued after it are entered all the same.
        for (i, off) in offsets.prefix(2).enumerated() {
            #expect(lg_uring_queue_read(ring, fd, buffers[i].baseAddress, 8192, off, UInt64(100 + i)) == 0)
        }
        #expect(lg_uring_queue_read(ring, -1, buffers[4].baseAddress, 8192, 0, 104) == 0)
        for (i, off) in offsets.enumerated().dropFirst(2) {
            #expect(lg_uring_queue_read(ring, fd, buffers[i].baseAddress, 8192, off, UInt64(100 + i)) == 0)
        }
        #expect(lg_uring_queue_read(ring, fd, buffers[5].baseAddress, 8192, 1 << 20, 105) == 0)
        usleep(20_000)
        var early: UInt64 = 0
        var earlyResult: Int32 = 0
        #expect(lg_uring_reap(ring, &early, &earlyResult, 1) == 0, "queued reads wait for the submit")
        #expect(lg_uring_submit(ring) == 6, "one submit enters all six")
        #expect(lg_uring_submit(ring) == 0, "and leaves nothing queued")
        #expect(lg_uring_wait(ring, 6) == 0)
        var signalled: UInt64 = 0
        #expect(read(efd, &signalled, 8) == 8 && signalled >= 1)

        var tags = [UInt64](repeating: 0, count: 8)
        var results = [Int32](repeating: 0, count: 8)
        let n = Int(lg_uring_reap(ring, &tags, &results, 8))
        #expect(n == 6)
        var seen: [UInt64: Int32] = [:]
        for i in 0..<n { seen[tags[i]] = results[i] }
        for (i, off) in offsets.enumerated() {
            #expect(seen[UInt64(100 + i)] == 8192)
            #expect(Array(buffers[i]) == Array(bytes[Int(off)..<Int(off) + 8192]), "read \(i) at \(off)")
        }
        #expect(seen[104] == -EBADF)
        #expect(seen[105] == 0, "past the end: nothing read")
        #expect(lg_uring_reap(ring, &tags, &results, 8) == 0, "each completion is taken once")
    }

    /// The kernel holds the file from the submission on: a descriptor closed
    /// (or its number reused) before the read ends does not change what it reads.
    @Test func aDescriptorClosedAfterSubmissionStillReadsItsFile() throws {
        let dir = TemporaryDirectory("uring")
        let first = dir.path + "/first", second = dir.path + "/second"
        try #require(FileManager.default.createFile(atPath: first, contents: Data(repeating: 0xAA, count: 8192)))
        try #require(FileManager.default.createFile(atPath: second, contents: Data(repeating: 0x55, count: 8192)))
        try Self.withRing { ring, _ in try Self.readAfterClose(ring, first: first, second: second) }
    }

    private static func readAfterClose(_ ring: OpaquePointer, first: String, second: String) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { buffer.deallocate() }
        for round in 0..<50 {
            let fd = open(first, O_RDONLY)
            try #require(fd >= 0)
            #expect(lg_uring_queue_read(ring, fd, buffer.baseAddress, 8192, 0, UInt64(round)) == 0)
            #expect(lg_uring_submit(ring) == 1)
            close(fd)
            let reused = open(second, O_RDONLY)  // most likely the same number
            #expect(lg_uring_wait(ring, 1) == 0)
            var tag: UInt64 = 0
            var result: Int32 = 0
            #expect(lg_uring_reap(ring, &tag, &result, 1) == 1)
            #expect(tag == UInt64(round) && result == 8192)
            #expect(buffer.allSatisfy { $0 == 0xAA }, "round \(round) read another file")
            close(reused)
        }
    }

    /// A full submission ring refuses a read (-EBUSY) rather than overwrite
    /// one queued; after a submit it has room again.
    @Test func aFullRingRefusesAReadUntilItIsSubmitted() throws {
        let dir = TemporaryDirectory("uring")
        let path = dir.path + "/file"
        try #require(FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 8192)))
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        try Self.withRing { ring, _ in
            let buffers = (0..<9).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 4096) }
            defer { for b in buffers { b.deallocate() } }
            for i in 0..<8 { #expect(lg_uring_queue_read(ring, fd, buffers[i].baseAddress, 8192, 0, UInt64(i)) == 0) }
            #expect(lg_uring_queue_read(ring, fd, buffers[8].baseAddress, 8192, 0, 8) == -EBUSY)
            #expect(lg_uring_submit(ring) == 8)
            #expect(lg_uring_wait(ring, 8) == 0)
            var tags = [UInt64](repeating: 0, count: 8)
            var results = [Int32](repeating: 0, count: 8)
            #expect(lg_uring_reap(ring, &tags, &results, 8) == 8)
            #expect(Set(tags) == Set(0..<8) && results.allSatisfy { $0 == 8192 })
            #expect(lg_uring_queue_read(ring, fd, buffers[8].baseAddress, 8192, 0, 8) == 0)
            #expect(lg_uring_submit(ring) == 1)
            #expect(lg_uring_wait(ring, 1) == 0)
            #expect(lg_uring_reap(ring, &tags, &results, 8) == 1 && tags[0] == 8 && results[0] == 8192)
        }
    }

    /// Runs `body` with a ring of 8 and its eventfd; skips (and says so) where
    /// the kernel has no io_uring or forbids it: the server then uses read threads.
    private static func withRing(_ body: (OpaquePointer, Int32) throws -> Void) throws {
        let efd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        defer { close(efd) }
        guard let ring = lg_uring_open(8, efd) else {
            print("io_uring not available (errno \(errno)): skipped")
            return
        }
        defer { lg_uring_close(ring) }
        try body(ring, efd)
    }
}
