/// How a read may get its blocks, passed down the read path. The server's
/// event loop must never wait for the disk, so it reads `.withoutWaiting`:
/// blocks from the page cache, or copied from the OS page cache when they are
/// all there (`preadv2` with `RWF_NOWAIT`, which starts the disk read when
/// they are not). Any other block stops the read with `ReadFailure.notCached`,
/// and the request goes to a read thread that may wait for the disk.
enum ReadPolicy: Sendable {
    case mayReadDisk
    case withoutWaiting
}

/// Why the read path stopped. Internal to it: the entry points turn `notCached`
/// into "needs the disk" and hand out only `StorageError`.
enum ReadFailure: Error {
    case storage(StorageError)
    /// A `.withoutWaiting` read needed a block that only the disk has: which
    /// blocks, when they are a layer file's (nil: a layer not downloaded yet).
    case notCached(BlockMiss?)

    /// The error of a read that was allowed to use the disk, where no block can be "not cached".
    var ofDiskRead: StorageError {
        switch self {
        case .storage(let e): return e
        case .notCached: preconditionFailure("a read allowed to use the disk stopped for a block not cached")
        }
    }

    /// Runs storage code inside the read path.
    static func lift<R>(_ body: () throws(StorageError) -> R) throws(ReadFailure) -> R {
        do throws(StorageError) { return try body() } catch { throw .storage(error) }
    }

    /// Runs a read that may use the disk, for callers outside the read path.
    static func onDisk<R>(_ body: () throws(ReadFailure) -> R) throws(StorageError) -> R {
        do throws(ReadFailure) { return try body() } catch { throw error.ofDiskRead }
    }
}
