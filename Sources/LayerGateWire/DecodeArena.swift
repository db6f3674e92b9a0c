#if canImport(Glibc)
import Glibc
#endif
import CLayerGateProto

/// A bump allocator that protobuf-c unpacks a small request into, on the
/// event loop that owns it: a GetPage decodes without malloc, and the
/// per-request allocations of a token do not churn the heap the response
/// buffers come from (measured: they made packing a page several times
/// slower). Everything is given back at once after each decode; what does
/// not fit goes to malloc and is freed then.
public final class DecodeArena {
    private let base: UnsafeMutableRawPointer
    private let capacity: Int
    private var used = 0
    private var overflow: [UnsafeMutableRawPointer] = []

    public init(capacity: Int = 64 << 10) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit {
        reset()
        base.deallocate()
    }

    fileprivate func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        let rounded = (size + 15) & ~15
        if rounded >= size, rounded <= capacity - used {
            defer { used += rounded }
            return base + used
        }
        guard let p = malloc(max(size, 1)) else { return nil }
        overflow.append(p)
        return p
    }

    private func reset() {
        used = 0
        for p in overflow { free(p) }
        overflow.removeAll(keepingCapacity: true)
    }

    /// Runs `body` with a protobuf-c allocator over this arena, then frees all it gave out.
    func withAllocator<R>(_ body: (UnsafeMutablePointer<ProtobufCAllocator>) -> R) -> R {
        defer { reset() }
        var allocator = ProtobufCAllocator(
            alloc: { data, size in
                guard let data else { return nil }
                return Unmanaged<DecodeArena>.fromOpaque(data).takeUnretainedValue().allocate(size)
            },
            free: { _, _ in },  // all at once, at the end
            allocator_data: Unmanaged.passUnretained(self).toOpaque())
        return withUnsafeMutablePointer(to: &allocator) { body($0) }
    }
}
