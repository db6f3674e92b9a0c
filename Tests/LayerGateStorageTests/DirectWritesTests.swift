import Foundation
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// The real filesystem, except that a direct write (while O_DIRECT is on)
/// fails with EINVAL after `directWritesAllowed` of them: a filesystem that
/// takes O_DIRECT and then refuses an alignment or a short write. With
/// `offersDirect` false it refuses O_DIRECT outright (FUSE does).
private final class RefusingDirectFS: FileSystem, @unchecked Sendable {
    // @unchecked: the counters are under `lock`.
    let base = RealFileSystem()
    let directWritesAllowed: Int
    let offersDirect: Bool
    private let lock = NSLock()
    private var direct: Set<Int32> = []
    private(set) var directWrites = 0
    private(set) var turnedOff = 0

    init(directWritesAllowed: Int, offersDirect: Bool = true) {
        self.directWritesAllowed = directWritesAllowed
        self.offersDirect = offersDirect
    }

    func bypassPageCache(_ fd: Int32, _ on: Bool) -> Bool {
        guard offersDirect, base.bypassPageCache(fd, on) else { return false }
        lock.withLock {
            if on { direct.insert(fd) } else if direct.remove(fd) != nil { turnedOff += 1 }
        }
        return true
    }

    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        let refuse = lock.withLock { () -> Bool in
            guard direct.contains(fd) else { return false }
            directWrites += 1
            return directWrites > directWritesAllowed
        }
        if refuse { throw SystemError(EINVAL) }
        return try base.pwrite(fd, from: buffer, at: offset)
    }

    func open(_ path: String, _ mode: OpenMode) throws(SystemError) -> Int32 { try base.open(path, mode) }
    func close(_ fd: Int32) {
        lock.withLock { _ = direct.remove(fd) }
        base.close(fd)
    }
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try base.pread(fd, into: buffer, at: offset)
    }
    func fsync(_ fd: Int32) throws(SystemError) { try base.fsync(fd) }
    func fdatasync(_ fd: Int32) throws(SystemError) { try base.fdatasync(fd) }
    func truncate(_ fd: Int32, to length: Int) throws(SystemError) { try base.truncate(fd, to: length) }
    func fstat(_ fd: Int32) throws(SystemError) -> FileInfo { try base.fstat(fd) }
    func stat(_ path: String) throws(SystemError) -> FileInfo { try base.stat(path) }
    func renameNoReplace(_ from: String, _ to: String) throws(SystemError) { try base.renameNoReplace(from, to) }
    func rename(_ from: String, _ to: String) throws(SystemError) { try base.rename(from, to) }
    func link(_ from: String, _ to: String) throws(SystemError) { try base.link(from, to) }
    func unlink(_ path: String) throws(SystemError) { try base.unlink(path) }
    func mkdir(_ path: String) throws(SystemError) { try base.mkdir(path) }
    func rmdir(_ path: String) throws(SystemError) { try base.rmdir(path) }
    func list(_ path: String) throws(SystemError) -> [String] { try base.list(path) }
    func availableBytes(_ path: String) throws(SystemError) -> UInt64 { try base.availableBytes(path) }
}

/// About 3 MiB of images and deltas of odd sizes: the writer's 1 MiB flushes
/// end at unaligned offsets, so direct writes carry a tail from one flush to the next.
private func mixedRecords() -> [Record] {
    var records: [Record] = []
    for b in 0..<360 as Range<UInt32> {
        records.append(image(key(b), 10, seed: UInt64(b)))
        records.append(delta(key(b), 11, offset: Int(b) * 13 % 7800, bytes: [UInt8](repeating: UInt8(b & 0xFF), count: 1 + Int(b) * 7 % 300)))
    }
    return records.sorted { ($0.key, $0.lsn.rawValue) < ($1.key, $1.lsn.rawValue) }
}

private func write(_ records: [Record], to dir: DirectoryHandle) throws -> LayerDescriptor {
    let w = try LayerWriter(directory: dir, tenant: testTenant, kind: .delta, lsnStart: Lsn(10), lsnEnd: Lsn(11),
                            generation: 1, failpoints: Failpoints())
    for r in records { try w.append(key: r.key, lsn: r.lsn, value: r.value) }
    return try w.finish()
}

@Suite("Layer files written past the OS page cache (O_DIRECT)")
struct DirectWritesTests {
    @Test func aLayerWrittenDirectIsByteForByteTheBufferedOne() throws {
        let directDir = TempDir(), bufferedDir = TempDir()
        // Is O_DIRECT on here at all? (ext4 and tmpfs: yes; FUSE: no.)
        let probe = try RawFile.open(testFS, directDir.path + "/probe", .createExclusive)
        let supported = DirectWrites(file: probe).active
        probe.close()
        try testFS.unlink(directDir.path + "/probe")
        if !supported { print("aLayerWrittenDirectIsByteForByteTheBufferedOne: no O_DIRECT on \(directDir.path): both files buffered") }

        let records = mixedRecords()
        let d = try write(records, to: .at(directDir.path))
        // A filesystem that refuses O_DIRECT outright: the plain buffered writer.
        let b = try write(records, to: try DirectoryHandle(fs: RefusingDirectFS(directWritesAllowed: 0, offersDirect: false), path: bufferedDir.path))
        #expect(d == b)
        let direct = try Data(contentsOf: URL(fileURLWithPath: directDir.path + "/" + d.name.description))
        let buffered = try Data(contentsOf: URL(fileURLWithPath: bufferedDir.path + "/" + b.name.description))
        #expect(direct.count == d.size && direct.count % 8192 == 0 && direct.count > 2 << 20)
        #expect(direct == buffered, "the same records make the same file either way")
        let reader = try LayerReader(directory: directDir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 64))
        #expect(try readAll(reader) == records)
        #expect(tempFiles(directDir).isEmpty)
    }

    @Test(arguments: [0, 1, 2, 3])
    func aDirectWriteThatFailsIsRetriedThroughThePageCache(allowed: Int) throws {
        let dir = TempDir()
        let fs = RefusingDirectFS(directWritesAllowed: allowed)
        let records = mixedRecords()
        let d = try write(records, to: try DirectoryHandle(fs: fs, path: dir.path))
        if fs.directWrites > 0 {
            #expect(fs.turnedOff == 1, "direct I/O turned off once, at the refused write")
        } else {
            print("aDirectWriteThatFailsIsRetriedThroughThePageCache: no O_DIRECT on \(dir.path): nothing to refuse")
        }
        let reader = try LayerReader(directory: dir.path, name: d.name, tenant: testTenant, cache: PageCache(capacity: 64))
        #expect(try readAll(reader) == records)
        #expect(tempFiles(dir).isEmpty)
    }

    /// A real tmpfs (which takes O_DIRECT) too small for the layer: the error
    /// is the full disk's, and the temp file is gone.
    @Test func aDirectWriteOnAFullTmpfsSaysNoSpace() throws {
        let dir = TempDir()
        guard let tmpfs = MountedTmpfs.mount(at: dir.path + "/tmpfs", size: "2m", test: "aDirectWriteOnAFullTmpfsSaysNoSpace") else { return }
        let mountPoint = tmpfs.path
        defer {
            tmpfs.unmount()
            withExtendedLifetime(dir) {}
        }
        #expect {
            _ = try write(mixedRecords(), to: .at(mountPoint))
        } throws: { error in
            guard case StorageError.io(_, _, let errno) = error else { return false }
            return errno == ENOSPC
        }
        #expect(try testFS.list(mountPoint).isEmpty, "no temp file left on the full disk")
    }
}
