#if canImport(Glibc)
import Glibc
#endif
import CLayerGateProto

/// Owns the C memory of one message being packed: every struct, string and
/// byte buffer the protobuf-c structs point at, freed together.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for b in blocks { free(b) } }

    /// A zeroed struct, initialized by protoc-c's `*__init` function.
    func message<T>(_ type: T.Type, _ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let raw = calloc(1, MemoryLayout<T>.stride)!
        blocks.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: 1)
        initialize(p)
        return p
    }

    /// An array of `count` pointers (for repeated message fields).
    func pointers<T>(to type: T.Type, count: Int) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?> {
        let raw = calloc(max(1, count), MemoryLayout<UnsafeMutablePointer<T>?>.stride)!
        blocks.append(raw)
        return raw.bindMemory(to: UnsafeMutablePointer<T>?.self, capacity: max(1, count))
    }

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    func bytes(_ b: [UInt8]) -> ProtobufCBinaryData {
        guard !b.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let raw = malloc(b.count)!
        blocks.append(raw)
        b.withUnsafeBytes { raw.copyMemory(from: $0.baseAddress!, byteCount: b.count) }
        return ProtobufCBinaryData(len: b.count, data: raw.assumingMemoryBound(to: UInt8.self))
    }
}

/// Reads C values protobuf-c unpacked into Swift values.
enum CRead {
    static func string(_ p: UnsafeMutablePointer<CChar>?) -> String {
        guard let p else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: strlen(p)), as: UTF8.self)
    }

    /// The same, but `known` itself when the bytes are equal (no new String).
    static func string(_ p: UnsafeMutablePointer<CChar>?, reusing known: String?) -> String {
        guard let p, var known else { return string(p) }
        let count = strlen(p)
        let same = known.withUTF8 { k in
            guard k.count == count, let base = k.baseAddress else { return k.count == count }
            return memcmp(base, p, count) == 0
        }
        return same ? known : string(p)
    }

    static func bytes(_ b: ProtobufCBinaryData) -> [UInt8] {
        guard b.len > 0, let data = b.data else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: b.len))
    }

    static func array<T, R>(_ p: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ n: Int, _ map: (T) -> R) -> [R] {
        guard let p, n > 0 else { return [] }
        return (0..<n).compactMap { p[$0].map { map($0.pointee) } }
    }
}
