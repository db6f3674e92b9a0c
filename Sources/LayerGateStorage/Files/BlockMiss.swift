/// The blocks of a layer file that a read without waiting lacked. Why it is
/// handed out: the event loop can read them itself with a kernel read it is
/// told about when done (io_uring), instead of handing the whole request to
/// a read thread and back (two wake-ups), then `install` them and run the
/// read again, which then finds them cached or names the next blocks it lacks.
public struct BlockMiss: Sendable {
    let reader: LayerReader
    let blocks: Range<UInt64>
    let isIndex: Bool

    /// Where the blocks start in the file, and how many bytes they are: whole
    /// 8 KiB blocks, so a direct read of them is aligned.
    public var offset: Int { Int(blocks.lowerBound) * LayerFormat.blockSize }
    public var byteCount: Int { blocks.count * LayerFormat.blockSize }
    /// The most bytes a miss names: the longest run the read path reads at once.
    public static let maxByteCount = LayerReader.maxRunBlocks * LayerFormat.blockSize

    /// Runs `submit` with an open direct (`O_DIRECT`) descriptor of the file,
    /// which stays open (not reused for another file) until `submit` returns:
    /// a kernel read submitted in it holds the file from then on. Nil when
    /// the file has no such descriptor open (it is read through the OS page
    /// cache, whose read-ahead a read thread should bear), or is on a
    /// filesystem of the tests' making. Not generic: called from the server
    /// module, a generic one ran unspecialised there, looking up the metadata
    /// of its optionals at run time on every miss (4 % of the loop's Swift time).
    public func withDirectDescriptor(_ submit: (_ fd: Int32) -> Int32) -> Int32? {
        reader.withOpenDirectDescriptor(submit)
    }

    /// Puts the bytes read (exactly `byteCount`) in the page cache, checked as
    /// any load is. False when they fail the check.
    public func install(_ bytes: UnsafeRawBufferPointer) -> Bool {
        reader.install(self, from: bytes)
    }
}
