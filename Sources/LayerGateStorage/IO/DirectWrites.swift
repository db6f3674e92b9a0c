/// Writes a new file past the OS page cache (O_DIRECT) where the filesystem
/// allows it, through an aligned staging buffer.
///
/// Why: a layer file is written once, then read through our own page cache.
/// Written through the OS page cache, each byte is copied into freshly
/// allocated kernel pages and written back later. On our VMs that copy was
/// 41 % of the engine's CPU during ingest, and the write-back competed with
/// the WAL's fsyncs. With O_DIRECT the device reads the staging buffer.
///
/// Any failure of a direct write turns direct I/O off for the file and
/// retries the same bytes through the page cache, so errors (ENOSPC above
/// all) are the ones a buffered write reports, and a filesystem that refuses
/// an alignment still gets its file.
final class DirectWrites {
    let file: RawFile
    /// Only when the file took O_DIRECT.
    private let staging: UnsafeMutableRawBufferPointer?
    /// False once the file writes through the page cache.
    private(set) var active: Bool

    /// Turns on direct I/O for `file` (when its filesystem can) with a staging
    /// buffer of `capacity` bytes (a multiple of `directIOAlignment`).
    init(file: RawFile, capacity: Int) {
        precondition(capacity > 0 && capacity % directIOAlignment == 0, "staging must be whole aligned units")
        self.file = file
        active = file.fs.bypassPageCache(file.fd, true)
        staging = active ? .allocate(byteCount: capacity, alignment: directIOAlignment) : nil
    }

    deinit { staging?.deallocate() }

    /// The longest prefix of `count` bytes that can go out directly now; the
    /// rest waits for more bytes (everything, once direct I/O is off).
    func writable(_ count: Int) -> Int { active ? count - count % directIOAlignment : count }

    /// `bytes[range]` at `offset`, as `write` below.
    func write(_ bytes: [UInt8], _ range: Range<Int>, at offset: Int) throws(StorageError) {
        // withUnsafeBytes rethrows untyped errors: carry the typed one out.
        var failure: StorageError?
        bytes.withUnsafeBytes { b in
            do throws(StorageError) { try write(UnsafeRawBufferPointer(rebasing: b[range]), at: offset) } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Writes `bytes` at `offset`. While active, both must be aligned
    /// (`writable` says how much); otherwise it is a plain write.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        guard active, let staging else { return try file.write(bytes, at: offset) }
        precondition(bytes.count % directIOAlignment == 0 && offset % directIOAlignment == 0, "unaligned direct write")
        var done = 0
        while done < bytes.count {
            let n = min(staging.count, bytes.count - done)
            guard let from = bytes.baseAddress, let to = staging.baseAddress else { return }
            to.copyMemory(from: from + done, byteCount: n)
            do throws(StorageError) {
                try file.write(UnsafeRawBufferPointer(rebasing: staging[0..<n]), at: offset + done)
            } catch {
                // A short or refused direct write: the rest goes through the page cache.
                active = false
                guard file.fs.bypassPageCache(file.fd, false) else { throw error }
                return try file.write(UnsafeRawBufferPointer(rebasing: bytes[done...]), at: offset + done)
            }
            done += n
        }
    }
}
