#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// An open descriptor of a layer file, and whether it reads past the OS page
/// cache. Why direct reads: our page cache is the cache. Through the OS page
/// cache a miss reads ahead (tens of KiB to MiB the page cache of the process
/// then double-holds), and the event loop's no-wait reads of what the OS
/// cached run that read-ahead's submission on the loop thread itself.
struct ReadDescriptor {
    static let none = ReadDescriptor(fd: -1, direct: false)
    var fd: Int32
    /// Opened for direct reads: memory, length and offset aligned to `directIOAlignment`.
    var direct: Bool
}

/// A layer file's identity for reads: its path, what it was when validated,
/// and a descriptor from the table when one is needed.
final class VirtualFile: Sendable {
    let id: UInt64
    let path: String
    let identity: FileInfo
    private let table: OpenFileTable
    /// A descriptor of the file's own, once its name is gone (an evicted
    /// layer): reads still in flight on it go on through this one.
    private let unnamed = Atomic<Int32>(-1)
    /// Whether `unnamed` reads directly: set before it is published.
    private let unnamedDirect = Atomic<Bool>(false)
    /// The filesystem refused a direct read of this file: every descriptor
    /// of it reads through the OS page cache from then on.
    private let directRefused = Atomic<Bool>(false)
    var refusedDirectReads: Bool { directRefused.load(ordering: .relaxed) }

    init(table: OpenFileTable, path: String) throws(StorageError) {
        self.table = table
        self.path = path
        id = OpenFileTable.newFileId()
        identity = try table.openFirst(path, id: id)
    }

    deinit {
        let fd = unnamed.load(ordering: .acquiring)
        if fd >= 0 {
            table.fs.close(fd)
            table.releaseUnnamed()
        }
        table.forget(id)
    }

    var fs: any FileSystem { table.fs }

    private var ownDescriptor: ReadDescriptor? {
        let fd = unnamed.load(ordering: .acquiring)
        return fd >= 0 ? ReadDescriptor(fd: fd, direct: unnamedDirect.load(ordering: .relaxed)) : nil
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        if let own = ownDescriptor { return try read(own, into: buffer, at: offset) }
        do throws(StorageError) {
            try table.withDescriptor(self) { fd throws(StorageError) in try read(fd, into: buffer, at: offset) }
        } catch {
            // The name went away while this read reopened it: the file did not.
            guard let own = ownDescriptor else { throw error }
            try read(own, into: buffer, at: offset)
        }
    }

    /// One read through `fd`. A direct one needs aligned memory: the page
    /// cache's loads have it; anything else (a summary, the fences) goes
    /// through an aligned copy. A filesystem that refuses the direct read
    /// (EINVAL) has the file read through the OS page cache from then on, by
    /// this descriptor and every other (each turned buffered before its next read).
    private func read(_ fd: ReadDescriptor, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        let (fs, path) = (table.fs, self.path)
        if fd.direct {
            if !directRefused.load(ordering: .relaxed) {
                do throws(StorageError) {
                    return try readDirect(fd.fd, into: buffer, at: offset)
                } catch {
                    guard case .io(_, _, EINVAL) = error else { throw error }
                    if !directRefused.exchange(true, ordering: .relaxed) { table.countFallback() }
                }
            }
            guard fs.bypassPageCache(fd.fd, false) else {
                throw .io(operation: "read (direct I/O refused, and it could not be turned off)", path: path, errno: EINVAL)
            }
            table.readsBuffered(id, fd: fd.fd)
            if fd.fd == unnamed.load(ordering: .acquiring) { unnamedDirect.store(false, ordering: .relaxed) }
        }
        try RawFile.read(fs, fd.fd, path: path, into: buffer, at: offset)
    }

    private func readDirect(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        let (fs, path) = (table.fs, self.path)
        let a = directIOAlignment
        if offset % a == 0, buffer.count % a == 0, Int(bitPattern: buffer.baseAddress) % a == 0 {
            return try RawFile.read(fs, fd, path: path, into: buffer, at: offset)
        }
        // Whole aligned units around the bytes asked for; a layer file is whole 8 KiB blocks,
        // so they end within it when the bytes do.
        let start = offset - offset % a
        let end = (offset + buffer.count + a - 1) / a * a
        try withUnsafeTemporaryAllocation(byteCount: end - start, alignment: a) { span throws(StorageError) in
            try RawFile.read(fs, fd, path: path, into: span, at: start)
            if let to = buffer.baseAddress, let from = span.baseAddress {
                to.copyMemory(from: from + (offset - start), byteCount: buffer.count)
            }
        }
    }

    /// Fills `buffer` from `offset` if that needs no wait for the disk: the
    /// bytes are in the OS page cache and the file has a descriptor open.
    /// False when they are not (or the read fails: the blocking read says
    /// why), and always for a direct descriptor, which has no such cache.
    func readIfResident(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Bool {
        let fs = table.fs
        if let own = ownDescriptor {
            return !own.direct && fs.preadIfResident(own.fd, into: buffer, at: offset) == buffer.count
        }
        return table.withOpenDescriptor(self) { fd in
            !fd.direct && fs.preadIfResident(fd.fd, into: buffer, at: offset) == buffer.count
        } ?? false
    }

    /// Runs `body` with an open direct descriptor, held open until it returns.
    /// Nil when none is open, when it reads through the OS page cache (a read
    /// there can start megabytes of read-ahead in the caller: a read thread
    /// should bear that, not an event loop), or when the filesystem is one of
    /// the tests' making (its descriptors are not the kernel's).
    func withOpenDirectDescriptor<R>(_ body: (Int32) -> R) -> R? {
        guard table.fs.descriptorsAreReal, !refusedDirectReads else { return nil }
        if let own = ownDescriptor { return own.direct ? body(own.fd) : nil }
        return table.withOpenDescriptor(self) { $0.direct ? body($0.fd) : nil } ?? nil
    }

    /// Opens a descriptor of the file's own, so that reads go on after its name
    /// is removed. False when none could be opened, the table's share of such
    /// descriptors is taken, or the name is another file now.
    func keepOpenWithoutName() -> Bool {
        if unnamed.load(ordering: .acquiring) >= 0 { return true }
        let fs = table.fs
        guard table.reserveUnnamed() else { return false }
        var kept = false
        defer { if !kept { table.releaseUnnamed() } }  // given back by deinit once kept
        guard let fd = try? table.openDescriptor(path, direct: !refusedDirectReads) else { return false }
        guard let info = try? fs.fstat(fd.fd), info.isSameFile(as: identity) else {
            fs.close(fd.fd)
            return false
        }
        unnamedDirect.store(fd.direct, ordering: .relaxed)
        kept = unnamed.compareExchange(expected: -1, desired: fd.fd, ordering: .acquiringAndReleasing).exchanged
        if !kept { fs.close(fd.fd) }  // another call kept one first
        return true
    }

    func read(count: Int, at offset: Int) throws(StorageError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var failure: StorageError?
        out.withUnsafeMutableBytes { buf in
            do throws(StorageError) { try read(into: buf, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }
}
