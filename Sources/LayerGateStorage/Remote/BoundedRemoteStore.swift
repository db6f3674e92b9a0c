import Dispatch

/// A store whose calls run `permits` at a time, over all tenants: each call
/// holds descriptors while it runs (the store's directory or a socket, the
/// object, a local file), and uploads, downloads and checks of many tenants
/// at once could otherwise take the descriptors connections and layer files
/// were planned with. A call past the limit waits for one to end; calls
/// already block (they run on `BlockingIO` or a read thread), and a call
/// never makes another through this wrapper, so the wait cannot deadlock.
final class BoundedRemoteStore: RemoteStore {
    let inner: any RemoteStore
    private let permits: DispatchSemaphore

    init(_ inner: any RemoteStore, permits: Int) {
        self.inner = inner
        self.permits = DispatchSemaphore(value: max(1, permits))
    }

    var description: String { inner.description }

    private func bounded<R>(_ call: () throws(RemoteError) -> R) throws(RemoteError) -> R {
        permits.wait()
        defer { permits.signal() }
        return try call()
    }

    func putIfAbsent(_ key: String, from source: LocalObject) throws(RemoteError) -> RemotePut {
        try bounded { () throws(RemoteError) in try inner.putIfAbsent(key, from: source) }
    }

    func replace(_ key: String, bytes: [UInt8]) throws(RemoteError) {
        try bounded { () throws(RemoteError) in try inner.replace(key, bytes: bytes) }
    }

    func create(_ key: String, bytes: [UInt8]) throws(RemoteError) -> Bool {
        try bounded { () throws(RemoteError) in try inner.create(key, bytes: bytes) }
    }

    func get(_ key: String, limit: Int) throws(RemoteError) -> [UInt8]? {
        try bounded { () throws(RemoteError) in try inner.get(key, limit: limit) }
    }

    func head(_ key: String) throws(RemoteError) -> ObjectHead? {
        try bounded { () throws(RemoteError) in try inner.head(key) }
    }

    func list(prefix: String) throws(RemoteError) -> [String] {
        try bounded { () throws(RemoteError) in try inner.list(prefix: prefix) }
    }

    func download(_ key: String, into fs: any FileSystem, path: String) throws(RemoteError) -> LocalObject? {
        try bounded { () throws(RemoteError) in try inner.download(key, into: fs, path: path) }
    }

    func delete(_ key: String) throws(RemoteError) {
        try bounded { () throws(RemoteError) in try inner.delete(key) }
    }

    func verify(_ key: String, size: Int, crc32c: UInt32) throws(RemoteError) -> Bool {
        try bounded { () throws(RemoteError) in try inner.verify(key, size: size, crc32c: crc32c) }
    }
}
