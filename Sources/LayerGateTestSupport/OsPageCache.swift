import LayerGateStorage

#if canImport(Glibc)
import Glibc
#endif

/// Asks the OS to forget a file's cached pages (posix_fadvise DONTNEED), as a
/// cold start finds it; true when none is left, checked with a read of its
/// second 8 KiB block that must not wait for the disk.
@discardableResult
public func dropFromOsCache(_ path: String) -> Bool {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    var byte: UInt8 = 0
    return withUnsafeMutableBytes(of: &byte) { RealFileSystem().preadIfResident(fd, into: $0, at: 8192) } == nil
}
