#if canImport(Glibc)
import Glibc
#endif

/// The filesystem with two failpoints in front of it, so a whole server can
/// be run against a disk that fills up or a process that runs out of
/// descriptors, on cue and without root (the torture test does):
///
/// - `disk-full`: with `return`, every operation that needs space (a write, a
///   create, mkdir, rename, link) fails with ENOSPC; `sleep(MS)` makes each a
///   slow disk.
/// - `no-descriptors`: with `return`, every open and directory listing
///   fails with EMFILE.
///
/// Inert, and a direct call through, unless failpoints are enabled.
final class FailpointFileSystem: FileSystem {
    let base: any FileSystem
    let failpoints: Failpoints

    init(base: any FileSystem, failpoints: Failpoints) {
        self.base = base
        self.failpoints = failpoints
    }

    private func space() throws(SystemError) {
        do throws(StorageError) { try failpoints.hit("disk-full") } catch { throw SystemError(ENOSPC) }
    }

    private func descriptor() throws(SystemError) {
        do throws(StorageError) { try failpoints.hit("no-descriptors") } catch { throw SystemError(EMFILE) }
    }

    func open(_ path: String, _ mode: OpenMode) throws(SystemError) -> Int32 {
        try descriptor()
        if mode == .createExclusive || mode == .createTruncate { try space() }
        return try base.open(path, mode)
    }

    func close(_ fd: Int32) { base.close(fd) }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try base.pread(fd, into: buffer, at: offset)
    }

    func preadIfResident(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int? {
        base.preadIfResident(fd, into: buffer, at: offset)
    }

    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) -> Int {
        try space()
        return try base.pwrite(fd, from: buffer, at: offset)
    }

    func fsync(_ fd: Int32) throws(SystemError) { try base.fsync(fd) }
    func fdatasync(_ fd: Int32) throws(SystemError) { try base.fdatasync(fd) }
    func truncate(_ fd: Int32, to length: Int) throws(SystemError) { try base.truncate(fd, to: length) }
    func fstat(_ fd: Int32) throws(SystemError) -> FileInfo { try base.fstat(fd) }
    func stat(_ path: String) throws(SystemError) -> FileInfo { try base.stat(path) }

    func renameNoReplace(_ from: String, _ to: String) throws(SystemError) {
        try space()
        try base.renameNoReplace(from, to)
    }

    func rename(_ from: String, _ to: String) throws(SystemError) {
        try space()
        try base.rename(from, to)
    }

    func link(_ from: String, _ to: String) throws(SystemError) {
        try space()
        try base.link(from, to)
    }

    func unlink(_ path: String) throws(SystemError) { try base.unlink(path) }

    func mkdir(_ path: String) throws(SystemError) {
        try space()
        try base.mkdir(path)
    }

    func rmdir(_ path: String) throws(SystemError) { try base.rmdir(path) }

    func list(_ path: String) throws(SystemError) -> [String] {
        try descriptor()
        return try base.list(path)
    }

    func availableBytes(_ path: String) throws(SystemError) -> UInt64 { try base.availableBytes(path) }
    func bypassPageCache(_ fd: Int32, _ on: Bool) -> Bool { base.bypassPageCache(fd, on) }
    var descriptorsAreReal: Bool { base.descriptorsAreReal }
}
