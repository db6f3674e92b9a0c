/// How a read may get its blocks, passed down the read path. The server's
/// event loop must never block, so it reads with `.cachedOnly`: a block not in
/// the page cache then fails the read with `StorageError.notCached`, and the
/// request goes to a task that may read the disk.
enum ReadPolicy: Sendable {
    case mayReadDisk
    case cachedOnly
}
