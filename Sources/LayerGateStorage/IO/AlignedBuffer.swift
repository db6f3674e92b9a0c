/// A growable byte buffer whose memory is aligned for O_DIRECT, so a layer
/// file's or a WAL commit's bytes are written to the device from where they
/// were appended.
///
/// Why: the layer writer used to append into an array and then copy each
/// MiB into an aligned staging buffer for the direct write; that second copy
/// was 10–14 % of the server's CPU during ingest.
final class AlignedBuffer: @unchecked Sendable {
    // @unchecked: one user at a time: its owner, or the pool of
    // `AppendOnlyFile` between two commits.
    private var memory: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    /// - Parameter capacity: bytes held before the buffer grows (it grows as needed).
    init(capacity: Int) {
        memory = .allocate(byteCount: max(capacity, directIOAlignment), alignment: directIOAlignment)
    }

    deinit { memory.deallocate() }

    /// `n` more bytes at the end, filled by `fill`.
    func append(_ n: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        guard n > 0 else { return }
        reserve(n)
        fill(UnsafeMutableRawBufferPointer(rebasing: memory[count..<count + n]))
        count += n
    }

    func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { src in append(src.count) { $0.copyMemory(from: src) } }
    }

    func appendZeros(_ n: Int) {
        append(n) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    /// Runs `body` over the bytes `range` (within `0..<count`), for a write or a checksum.
    func withBytes<R, E: Error>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "bytes outside the buffer")
        return try body(UnsafeRawBufferPointer(rebasing: memory[range]))
    }

    /// Drops the first `n` bytes (written out): what follows moves to the front, which stays aligned.
    func removeFirst(_ n: Int) {
        precondition(n >= 0 && n <= count, "removing more than the buffer holds")
        let rest = count - n
        if rest > 0, let base = memory.baseAddress { base.copyMemory(from: base + n, byteCount: rest) }
        count = rest
    }

    /// Drops the last `n` bytes.
    func removeLast(_ n: Int) {
        precondition(n >= 0 && n <= count, "removing more than the buffer holds")
        count -= n
    }

    /// Gives memory beyond `capacity` back (keeping the bytes held), so a
    /// buffer that once held a large write does not keep its size while idle.
    func shrink(toCapacity capacity: Int) {
        let keep = max(capacity, count, directIOAlignment)
        guard memory.count > keep else { return }
        let smaller = UnsafeMutableRawBufferPointer.allocate(byteCount: keep, alignment: directIOAlignment)
        if count > 0, let to = smaller.baseAddress, let from = memory.baseAddress { to.copyMemory(from: from, byteCount: count) }
        memory.deallocate()
        memory = smaller
    }

    private func reserve(_ n: Int) {
        guard count + n > memory.count else { return }
        let grown = UnsafeMutableRawBufferPointer.allocate(
            byteCount: max(memory.count * 2, count + n), alignment: directIOAlignment)
        if count > 0, let to = grown.baseAddress, let from = memory.baseAddress { to.copyMemory(from: from, byteCount: count) }
        memory.deallocate()
        memory = grown
    }
}
