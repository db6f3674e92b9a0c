/// Lets a page read hand out an in-memory image as it is, instead of copying
/// it into the caller's page, when that image is the whole answer (no delta
/// above it at the LSN asked for). An image is an immutable value: holding
/// it keeps its bytes whatever the tenant does next (a freeze, a flush, a
/// reset), as a copy would. Why: the event loop can send it from where it
/// is, so a page served from memory is copied once (into the socket) instead
/// of twice (docs/ARCHITECTURE.md, "The path of a GetPage").
/// Pages in the page cache are never shared: their slots are reused, and a
/// pin held until a slow peer reads its answer would hold cache memory.
public struct ImageShare: Sendable {
    /// False: the page is always written into the caller's bytes.
    public let allowed: Bool
    /// The image handed out; the caller's page bytes were then not written.
    public internal(set) var image: [UInt8]?

    public init(allowed: Bool) { self.allowed = allowed }

    /// For a read whose page must be written whole.
    static var never: ImageShare { ImageShare(allowed: false) }
}
