/// What a layer covers, as encoded in its file name:
///
///     delta: <keyFirst>-<keyLast>__<lsnStart>-<lsnEnd>-g<gen>
///     image: <keyFirst>-<keyLast>__<lsn>-g<gen>
///
/// Keys are 34 hex digits (the packed key), LSNs 16, the generation 8; key
/// and LSN ranges are inclusive. The generation of the load that wrote the
/// layer is part of the name, so a reload never reproduces an older name.
public struct LayerName: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable { case delta = 0, image = 1 }

    public var kind: Kind
    public var keys: KeyRange
    public var lsnStart: Lsn
    public var lsnEnd: Lsn
    public var generation: UInt32

    public init(kind: Kind, keys: KeyRange, lsnStart: Lsn, lsnEnd: Lsn, generation: UInt32) {
        self.kind = kind
        self.keys = keys
        self.lsnStart = lsnStart
        self.lsnEnd = lsnEnd
        self.generation = generation
    }

    public var description: String {
        let keys = "\(self.keys.first.hex)-\(self.keys.last.hex)__"
        let gen = "-g" + Hex.fixed(UInt64(generation), digits: 8)
        switch kind {
        case .delta: return keys + lsnStart.hex16 + "-" + lsnEnd.hex16 + gen
        case .image: return keys + lsnStart.hex16 + gen
        }
    }

    /// Parses a file name; nil for anything that is not a layer name.
    public init?(parsing name: String) {
        let parts = name.split(separator: "__", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let keyParts = parts[0].split(separator: "-", omittingEmptySubsequences: false)
        guard keyParts.count == 2, let first = PageKey(hex: keyParts[0]), let last = PageKey(hex: keyParts[1]),
              first <= last
        else { return nil }
        let rest = parts[1].split(separator: "-", omittingEmptySubsequences: false)
        guard let genPart = rest.last, genPart.hasPrefix("g"),
              let gen = Hex.parseUInt64(genPart.dropFirst(), digits: 8)
        else { return nil }
        switch rest.count {
        case 2:
            guard let lsn = Hex.parseUInt64(rest[0], digits: 16) else { return nil }
            self.init(kind: .image, keys: KeyRange(first: first, last: last), lsnStart: Lsn(lsn), lsnEnd: Lsn(lsn),
                      generation: UInt32(gen))
        case 3:
            guard let s = Hex.parseUInt64(rest[0], digits: 16), let e = Hex.parseUInt64(rest[1], digits: 16), s <= e
            else { return nil }
            self.init(kind: .delta, keys: KeyRange(first: first, last: last), lsnStart: Lsn(s), lsnEnd: Lsn(e),
                      generation: UInt32(gen))
        default:
            return nil
        }
        // One spelling per layer (lowercase hex, fixed widths): a name the
        // writer would not produce is not a layer, so no file can claim a
        // layer under a second name.
        guard description == name else { return nil }
    }
}

/// A published layer as the index and the layer map know it.
public struct LayerDescriptor: Hashable, Sendable {
    public var name: LayerName
    public var size: Int

    public var fileName: String { name.description }
}
