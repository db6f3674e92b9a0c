import CSystemShims

#if canImport(Glibc)
import Glibc
#endif

/// Asks the OS to forget a file's cached pages (posix_fadvise DONTNEED), as a
/// cold start finds it; true when none of them is left.
///
/// Residency is read with mincore, not with a read that must not wait: such
/// a read (RWF_NOWAIT) starts read-ahead of what it misses, and brought the
/// file back while a test was checking that it was gone (a CI failure).
/// DONTNEED also skips a page that is locked at that moment (read-ahead still
/// in flight), so it is asked a few times before the answer is no.
@discardableResult
public func dropFromOsCache(_ path: String) -> Bool {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    for attempt in 0..<20 {
        if attempt > 0 { usleep(5_000) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        if lg_resident_pages(fd) == 0 { return true }
    }
    return false
}
