#if canImport(Glibc)
import Glibc
#endif

/// What this server has claimed of a tenant's remote copy, kept next to
/// index.json as `remote_claim` (lines `claimed <generation>`, `index <crc>
/// [<crc>]` and, once another server was seen writing the tenant,
/// `fenced <generation>`).
///
/// Generations are taken by loads, not handed out, so a server that was
/// fenced once would take a higher generation at its next restart and could
/// win over the server that fenced it. The claim prevents that: a remote
/// index newer than the last generation this server claimed is another
/// server's, and a fence, once recorded, holds across restarts until the
/// tenant's directory is removed here.
struct RemoteClaim: Equatable, Sendable {
    /// The highest generation whose remote index this server created (or was
    /// about to): at attach, the generation of the index it attached from.
    var claimed: UInt32?
    /// Another server writes the tenant with this generation: nothing more is written here.
    var fencedBy: UInt32?
    /// CRC-32Cs of the bodies this server wrote as the index of `claimed`
    /// since its last confirmed write (each recorded before it is written, at
    /// most `maxIndexCrcs`): an index of that generation with other bytes is
    /// another server's. Empty when the claimed index was inherited at attach
    /// (its old server may still replace it).
    var indexCrcs: [UInt32] = []

    static let maxIndexCrcs = 32
    static let fileName = "remote_claim"
    static let tempName = "remote_claim.___temp"

    func encoded() -> [UInt8] {
        var text = ""
        if let claimed { text += "claimed \(claimed)\n" }
        if let fencedBy { text += "fenced \(fencedBy)\n" }
        if !indexCrcs.isEmpty { text += "index " + indexCrcs.map(String.init).joined(separator: " ") + "\n" }
        return Array(text.utf8)
    }

    /// Nil when the bytes are not a claim (damage): the caller then writes nothing remotely.
    static func decode(_ bytes: [UInt8]) -> RemoteClaim? {
        guard bytes.count <= 1024 else { return nil }
        var claim = RemoteClaim()
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ")
            let values = parts.dropFirst().compactMap { UInt32($0) }
            guard parts.count >= 2, values.count == parts.count - 1 else { return nil }
            switch (parts[0], values.count) {
            case ("claimed", 1): claim.claimed = values[0]
            case ("fenced", 1): claim.fencedBy = values[0]
            case ("index", 1...maxIndexCrcs): claim.indexCrcs = values
            default: return nil
            }
        }
        return claim
    }

    /// The claim in `directory` (the tenant's); an empty one when there is no file.
    static func read(fs: any FileSystem, directory: String) throws(StorageError) -> RemoteClaim {
        let path = directory + "/" + fileName
        let bytes: [UInt8]
        do throws(StorageError) {
            let file = try RawFile.open(fs, path, .readOnly)
            defer { file.close() }
            bytes = try file.readAll(limit: 1024)
        } catch {
            if case .io(_, _, let e) = error, e == ENOENT { return RemoteClaim() }
            throw error
        }
        guard let claim = decode(bytes) else { throw .corruptIndex(file: path, reason: "not a remote claim") }
        return claim
    }

    /// Replaces the claim atomically (temp, fsync, rename, directory fsync).
    func write(fs: any FileSystem, directory: String) throws(StorageError) {
        let dir = try DirectoryHandle(fs: fs, path: directory)
        let temp = dir.child(Self.tempName)
        do throws(StorageError) {
            let file = try RawFile.open(fs, temp, .createTruncate)
            defer { file.close() }
            try file.write(encoded(), at: 0)
            file.sync()
            do throws(SystemError) { try fs.rename(temp, dir.child(Self.fileName)) } catch {
                throw .io(operation: "rename", path: dir.child(Self.fileName), errno: error.errno)
            }
        } catch {
            try? fs.unlink(temp)
            throw error
        }
        dir.sync()
    }
}
