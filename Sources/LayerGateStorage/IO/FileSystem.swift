#if canImport(Glibc)
import Glibc
#endif

/// The one seam between the storage engine and a filesystem: every open,
/// read, write, sync, rename and directory change of the engine goes through
/// a `FileSystem` value. The server hands it the real one, rooted at the data
/// directory (so every path the engine handles, and every path in an error
/// message, is relative to it); tests hand it one that fails chosen
/// operations or loses what was not synced, as a power loss would.
///
/// Descriptors are plain integers owned by the implementation. Files are
/// created 0600 and directories 0700: a tenant's pages are nobody else's.
public protocol FileSystem: Sendable {
    func open(_ path: String, _ mode: OpenMode) throws(SystemError) -> Int32
    func close(_ fd: Int32)
    /// Reads up to `buffer.count` bytes; 0 means end of file.
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SystemError) -> Int
    /// Reads up to `buffer.count` bytes if that needs no wait for the disk
    /// (they are in the OS page cache); nil when it would, or cannot say.
    /// For an event loop, which must never block on I/O.
    func preadIfResident(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int?
    /// Writes up to `buffer.count` bytes; returns how many were written.
    func pwrite(_ fd: Int32, from buffer: UnsafeRawBufferPointer, at offset: Int) throws(SystemError) -> Int
    func fsync(_ fd: Int32) throws(SystemError)
    func fdatasync(_ fd: Int32) throws(SystemError)
    func truncate(_ fd: Int32, to length: Int) throws(SystemError)
    func fstat(_ fd: Int32) throws(SystemError) -> FileInfo
    func stat(_ path: String) throws(SystemError) -> FileInfo
    /// Renames without ever replacing: EEXIST when `to` exists; EINVAL or
    /// ENOSYS where the filesystem cannot promise that.
    func renameNoReplace(_ from: String, _ to: String) throws(SystemError)
    /// Renames, replacing `to` atomically (index.json only).
    func rename(_ from: String, _ to: String) throws(SystemError)
    func link(_ from: String, _ to: String) throws(SystemError)
    func unlink(_ path: String) throws(SystemError)
    func mkdir(_ path: String) throws(SystemError)
    func rmdir(_ path: String) throws(SystemError)
    /// Entry names of a directory, without "." and "..", in no particular order.
    func list(_ path: String) throws(SystemError) -> [String]
    /// Bytes an unprivileged writer can still use on the filesystem holding `path`.
    func availableBytes(_ path: String) throws(SystemError) -> UInt64
    /// Makes later writes to `fd` skip the OS page cache (O_DIRECT), or stop
    /// skipping it; true when the filesystem agreed. While on, every write's
    /// memory, offset and length must be multiples of `directIOAlignment`.
    func bypassPageCache(_ fd: Int32, _ on: Bool) -> Bool
    /// True when its descriptors are the kernel's, so other code (libcurl)
    /// may read and write them directly.
    var descriptorsAreReal: Bool { get }
}

/// What O_DIRECT asks of a write on any Linux block device (512- or 4096-byte sectors).
public let directIOAlignment = 4096

extension FileSystem {
    /// A filesystem of the tests' making writes through its own memory: never direct.
    public func bypassPageCache(_ fd: Int32, _ on: Bool) -> Bool { false }
    /// A filesystem of the tests' making has no OS page cache: every read waits.
    public func preadIfResident(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int? { nil }
    public var descriptorsAreReal: Bool { false }
}

extension FileSystem {
    /// Unlinks `path` only while it names `file`: a name another file took
    /// meanwhile is never removed. False when it names another file; throws
    /// what the stat or the unlink met (ENOENT: no such name).
    func unlink(_ path: String, ifItIs file: FileInfo) throws(SystemError) -> Bool {
        guard try stat(path).isSameFile(as: file) else { return false }
        try unlink(path)
        return true
    }
}

public enum OpenMode: Sendable, Equatable {
    /// Never blocks on open (a FIFO in place of a file must not hang a load).
    case readOnly
    case readWrite
    /// Creates a new file for writing; EEXIST when the name is taken.
    case createExclusive
    /// Creates the file if missing, truncating it to 0 bytes.
    case createTruncate
    /// A directory, opened to fsync it or to hold it open.
    case directory
}

public struct FileInfo: Equatable, Sendable {
    public var size: Int
    public var device: UInt64
    public var inode: UInt64
    public var isDirectory: Bool
    /// False for directories and for FIFOs, sockets and devices, which the
    /// engine never reads as data.
    public var isRegularFile: Bool

    public init(size: Int, device: UInt64, inode: UInt64, isDirectory: Bool, isRegularFile: Bool? = nil) {
        self.size = size
        self.device = device
        self.inode = inode
        self.isDirectory = isDirectory
        self.isRegularFile = isRegularFile ?? !isDirectory
    }

    public func isSameFile(as other: FileInfo) -> Bool { device == other.device && inode == other.inode }
}

/// A failed system call's errno.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public var errno: Int32

    public init(_ errno: Int32) { self.errno = errno }

    /// Conditions of the machine rather than of the data, which go away when
    /// space, descriptors or memory are freed: the caller may retry later.
    public var isResourceExhaustion: Bool {
        errno == ENOSPC || errno == EDQUOT || errno == EMFILE || errno == ENFILE || errno == ENOMEM
    }

    public var description: String { "\(String(cString: strerror(errno))) (errno \(errno))" }
}
