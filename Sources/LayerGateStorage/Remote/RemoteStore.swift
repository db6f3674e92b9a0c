#if canImport(Glibc)
import Glibc
#endif

/// Where layer files live beyond this machine's disk: an object store keyed
/// by paths such as `tenants/<id>/<layer file name>`.
///
/// Layer objects follow the local rule remotely: written once, never
/// overwritten. `putIfAbsent` is the remote form of RENAME_NOREPLACE (for
/// S3 a PUT with `If-None-Match: *`). Only a tenant's remote index is
/// replaced in place, and only by the server of its generation.
///
/// Calls block (disk or network): run them on `BlockingIO`, never on an event
/// loop or the concurrency pool.
public protocol RemoteStore: Sendable {
    /// What an operator reads in the log: the URL, never credentials.
    var description: String { get }
    /// Stores the bytes of `source` under `key` unless an object has that key already.
    func putIfAbsent(_ key: String, from source: LocalObject) throws(RemoteError) -> RemotePut
    /// Stores `bytes` under `key`, replacing what is there (remote indexes only).
    func replace(_ key: String, bytes: [UInt8]) throws(RemoteError)
    /// Stores `bytes` under `key` only if no object has that key (a remote
    /// index's first write of a generation); false when one has.
    func create(_ key: String, bytes: [UInt8]) throws(RemoteError) -> Bool
    /// The object's bytes, or nil when there is none; more than `limit` bytes is an error.
    func get(_ key: String, limit: Int) throws(RemoteError) -> [UInt8]?
    /// The object's size and, when the store keeps it, its CRC-32C; nil when there is none.
    func head(_ key: String) throws(RemoteError) -> ObjectHead?
    /// Keys directly under `prefix` (a "directory" ending in "/"), in no particular order.
    func list(prefix: String) throws(RemoteError) -> [String]
    /// Copies the object into a new file `path` of `fs` (created, written,
    /// fsynced); returns its size and CRC-32C, or nil when there is no such object.
    func download(_ key: String, into fs: any FileSystem, path: String) throws(RemoteError) -> LocalObject?
    /// Removes the object; one that is already gone is fine.
    func delete(_ key: String) throws(RemoteError)
    /// True when the object has `size` bytes with CRC-32C `crc32c`, as far as
    /// the store can tell (a directory store reads it; S3 compares the checksum
    /// kept in its metadata at upload). Asked before a layer's only local copy goes.
    func verify(_ key: String, size: Int, crc32c: UInt32) throws(RemoteError) -> Bool
}

extension RemoteStore {
    public func verify(_ key: String, size: Int, crc32c: UInt32) throws(RemoteError) -> Bool {
        guard let head = try head(key) else { return false }
        return head.size == size && head.crc32c == crc32c
    }
}

/// A file of the data directory, about to be uploaded: its CRC-32C is taken
/// before the upload, so that an object found under the same key can be told
/// apart from ours.
public struct LocalObject: Sendable {
    public let fs: any FileSystem
    /// Relative to the data directory.
    public let path: String
    public let size: Int
    public let crc32c: UInt32

    /// Reads the whole file once for its checksum.
    static func measure(fs: any FileSystem, path: String) throws(StorageError) -> LocalObject {
        let file = try RawFile.open(fs, path, .readOnly)
        defer { file.close() }
        let size = try file.size()
        var crc: UInt32 = 0
        try ObjectCopy.chunks(of: file, size: size) { chunk in crc = Checksum.crc32c(chunk, seed: crc) }
        return LocalObject(fs: fs, path: path, size: size, crc32c: crc)
    }
}

public struct ObjectHead: Equatable, Sendable {
    public var size: Int
    /// nil when the store does not say (a directory store would have to read the whole object).
    public var crc32c: UInt32?
}

public enum RemotePut: Equatable, Sendable {
    /// The object is new.
    case created
    /// An object with the same bytes was there: an earlier upload that was not acknowledged, retried.
    case sameExists
    /// An object with other bytes was there; it was left alone.
    case differentExists
}

/// What went wrong with the object store, with the key it concerns.
public enum RemoteError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The store could not be reached or refused the operation: try again later.
    case unavailable(operation: String, key: String, reason: String)
    /// This server ran out of its own file descriptors or memory, or of space
    /// on its data directory, while it moved an object: the store is not at
    /// fault, and the same call may work once those are freed.
    case exhausted(operation: String, key: String, reason: String)
    /// This server's own disk failed a call (an I/O error, a read-only
    /// filesystem) while it moved an object: damage or a failing disk here,
    /// not the store's fault nor a shortage a retry outlasts.
    case localIO(operation: String, key: String, reason: String)
    /// An object under the key holds other bytes than ours: never overwritten.
    case conflict(key: String, reason: String)
    /// A remote index does not parse or contradicts itself.
    case corruptIndex(key: String, reason: String)
    /// The remote storage URL or its settings are not usable.
    case badConfiguration(String)

    public var description: String {
        switch self {
        case .exhausted: return detail + " (this server is short of file descriptors, memory or disk space; retry later)"
        case .localIO: return detail + " (on this server's own disk, not the store)"
        default: return detail
        }
    }

    /// The description without whose fault it is: for a message that says so itself.
    public var detail: String {
        switch self {
        case .unavailable(let op, let key, let reason), .exhausted(let op, let key, let reason),
             .localIO(let op, let key, let reason):
            return "remote storage: \(op) \(key): \(reason)"
        case .conflict(let key, let reason): return "remote storage: object \(key) exists with other bytes: \(reason)"
        case .corruptIndex(let key, let reason): return "remote storage: corrupt remote index \(key): \(reason)"
        case .badConfiguration(let s): return "remote storage: \(s)"
        }
    }
}

extension RemoteError {
    /// A call of this process that failed while it moved an object (`errno`,
    /// nil when none is known), and whose it is. Out of descriptors or memory
    /// is this server's shortage, and so is a full disk when the call was on
    /// the data directory (`local`: a download's file, a local layer, the
    /// remote claim). Any other failure of a local call is this server's
    /// disk (`localIO`, INTERNAL on the wire: EIO is damage, not a store that
    /// is down). Anything else, a full store among them, is the store's.
    static func failed(_ operation: String, _ key: String, _ reason: String, errno: Int32?, local: Bool = false)
        -> RemoteError
    {
        if let e = errno, SystemError(e).isResourceExhaustion, local || (e != ENOSPC && e != EDQUOT) {
            return .exhausted(operation: operation, key: key, reason: reason)
        }
        return local ? .localIO(operation: operation, key: key, reason: reason)
            : .unavailable(operation: operation, key: key, reason: reason)
    }

    static func failed(_ operation: String, _ key: String, _ error: StorageError, local: Bool = false) -> RemoteError {
        failed(operation, key, "\(error)", errno: error.errno, local: local)
    }

    static func failed(_ operation: String, _ key: String, _ error: SystemError, local: Bool = false) -> RemoteError {
        failed(operation, key, "\(error)", errno: error.errno, local: local)
    }
}

/// Reads a file in pieces of a bounded size: an upload never holds a whole layer in memory.
enum ObjectCopy {
    static let chunkBytes = 1 << 20

    /// A copy's failed call, and which file it was on: whose fault it is
    /// (the store's or this server's) depends on which side each file is.
    struct Failure: Error {
        let error: StorageError
        let reading: Bool
    }

    /// Copies `size` bytes of `input` into `output` from offset 0; the CRC-32C of what was copied.
    static func copy(_ input: RawFile, size: Int, into output: RawFile) throws(Failure) -> UInt32 {
        var crc: UInt32 = 0
        var offset = 0
        var writing = false
        do throws(StorageError) {
            try chunks(of: input, size: size) { chunk throws(StorageError) in
                writing = true
                try output.write(chunk, at: offset)
                writing = false
                crc = Checksum.crc32c(chunk, seed: crc)
                offset += chunk.count
            }
        } catch {
            throw Failure(error: error, reading: !writing)
        }
        return crc
    }

    static func chunks(of file: RawFile, size: Int, _ body: (UnsafeRawBufferPointer) throws(StorageError) -> Void)
        throws(StorageError)
    {
        var buffer = [UInt8](repeating: 0, count: min(chunkBytes, max(size, 1)))
        var offset = 0
        while offset < size {
            let n = min(buffer.count, size - offset)
            let failure = buffer.withUnsafeMutableBytes { b -> StorageError? in
                let part = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                do throws(StorageError) {
                    try file.read(into: part, at: offset)
                    try body(UnsafeRawBufferPointer(part))
                    return nil
                } catch { return error }
            }
            if let failure { throw failure }
            offset += n
        }
    }
}
