/// Writes a new file past the OS page cache (O_DIRECT) where the filesystem
/// allows it, from the caller's aligned memory (`AlignedBuffer`).
///
/// Why: a layer file is written once, then read through our own page cache.
/// Written through the OS page cache, each byte is copied into freshly
/// allocated kernel pages and written back later. On our VMs that copy was
/// 41 % of the engine's CPU during ingest, and the write-back competed with
/// the WAL's fsyncs. With O_DIRECT the device reads the caller's buffer.
///
/// Any failure of a direct write turns direct I/O off for the file and
/// retries the same bytes through the page cache, so errors (ENOSPC above
/// all) are the ones a buffered write reports, and a filesystem that refuses
/// an alignment still gets its file.
final class DirectWrites {
    let file: RawFile
    /// False once the file writes through the page cache.
    private(set) var active: Bool

    /// Turns on direct I/O for `file`, when its filesystem can.
    init(file: RawFile) {
        self.file = file
        active = file.fs.bypassPageCache(file.fd, true)
    }

    /// The longest prefix of `count` bytes that can go out directly now; the
    /// rest waits for more bytes (everything, once direct I/O is off).
    func writable(_ count: Int) -> Int { active ? count - count % directIOAlignment : count }

    /// Writes `bytes` at `offset`. While active, their address, their count
    /// and `offset` must be multiples of `directIOAlignment` (`writable` says
    /// how much; `AlignedBuffer` holds them so); otherwise it is a plain write.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        guard active else { return try file.write(bytes, at: offset) }
        precondition(bytes.count % directIOAlignment == 0 && offset % directIOAlignment == 0
                     && Int(bitPattern: bytes.baseAddress) % directIOAlignment == 0, "unaligned direct write")
        do throws(StorageError) {
            try file.write(bytes, at: offset)
        } catch {
            // A short or refused direct write: it all goes again through the page cache.
            active = false
            guard file.fs.bypassPageCache(file.fd, false) else { throw error }
            try file.write(bytes, at: offset)
        }
    }
}
