import Glibc
import LayerGateTestSupport
import Testing

@testable import LayerGateStorage

/// The simulated disk must be as unforgiving as a real one, or the crash
/// tests built on it prove nothing.
@Suite("Simulated disk: power loss, torn writes, faults")
struct SimulatedDiskTests {
    func write(_ disk: SimulatedDisk, _ path: String, _ bytes: [UInt8], sync: Bool) throws {
        let fd = try disk.open(path, .createTruncate)
        _ = try bytes.withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 0) }
        if sync { try disk.fsync(fd) }
        disk.close(fd)
    }

    func read(_ disk: SimulatedDisk, _ path: String) throws -> [UInt8] {
        let fd = try disk.open(path, .readOnly)
        defer { disk.close(fd) }
        var out = [UInt8](repeating: 0, count: try disk.fstat(fd).size)
        _ = try out.withUnsafeMutableBytes { try disk.pread(fd, into: $0, at: 0) }
        return out
    }

    func syncDir(_ disk: SimulatedDisk, _ path: String) throws {
        let fd = try disk.open(path, .directory)
        try disk.fsync(fd)
        disk.close(fd)
    }

    @Test func powerLossKeepsExactlyWhatWasSynced() throws {
        let disk = SimulatedDisk()
        try disk.mkdir("d")
        try syncDir(disk, "")
        try write(disk, "d/synced", [1, 2, 3], sync: true)
        try write(disk, "d/unsynced-data", [4, 5], sync: false)
        try syncDir(disk, "d")
        try write(disk, "d/unsynced-entry", [6], sync: true)  // data synced, directory not
        let image = disk.crashImage()
        #expect(try read(image, "d/synced") == [1, 2, 3])
        #expect(try read(image, "d/unsynced-data") == [])
        #expect(throws: SystemError(ENOENT)) { _ = try image.stat("d/unsynced-entry") }
    }

    @Test func unsyncedRenamesAndUnlinksAreUndone() throws {
        let disk = SimulatedDisk()
        try write(disk, "a", [1], sync: true)
        try write(disk, "b", [2], sync: true)
        try syncDir(disk, "")
        try disk.rename("a", "b")
        let image = disk.crashImage()
        #expect(try read(image, "a") == [1])
        #expect(try read(image, "b") == [2])
        try syncDir(disk, "")
        let after = disk.crashImage()
        #expect(try read(after, "b") == [1])
        #expect(throws: SystemError(ENOENT)) { _ = try after.stat("a") }
    }

    @Test func tornImagesKeepPiecesOfUnsyncedWritesWithHoles() throws {
        var sawHole = false, sawPiece = false
        for seed in 0..<32 as Range<UInt64> {
            let disk = SimulatedDisk()
            let fd = try disk.open("f", .createExclusive)
            try syncDir(disk, "")
            try disk.fsync(fd)
            let bytes = [UInt8](repeating: 0xAB, count: 4 * 4096)
            _ = try bytes.withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 0) }
            let got = try read(disk.crashImage(.torn(seed: seed)), "f")
            if got.contains(0xAB) { sawPiece = true }
            if got.count > 4096, got.prefix(4096).allSatisfy({ $0 == 0 }) || got.contains(0) { sawHole = true }
            #expect(got.allSatisfy { $0 == 0 || $0 == 0xAB })
        }
        #expect(sawHole && sawPiece)
    }

    @Test func theCrashPointFailsThatOperationAndEverythingAfter() throws {
        let disk = SimulatedDisk()
        let fd = try disk.open("f", .createExclusive)
        try syncDir(disk, "")
        disk.crash(atOperation: 2)
        _ = try [UInt8(1)].withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 0) }  // 1: still up
        try disk.fsync(fd)  // 2: the power goes out; a dying process is not told
        #expect(disk.isCrashed)
        #expect(throws: SystemError(EIO)) { _ = try [UInt8(2)].withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 1) } }
        #expect(try read(disk.crashImage(), "f") == [], "the fsync never happened")
    }

    @Test func faultsCapacityAndDescriptorLimits() throws {
        let disk = SimulatedDisk(capacity: 10)
        let fd = try disk.open("f", .createExclusive)
        #expect(throws: SystemError(ENOSPC)) { _ = try [UInt8](repeating: 1, count: 11).withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 0) } }
        #expect(try disk.availableBytes("") == 10)
        disk.inject(SimulatedDisk.Fault([.write], errno: EIO, skip: 1, count: 1))
        _ = try [UInt8(1)].withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 0) }
        #expect(throws: SystemError(EIO)) { _ = try [UInt8(1)].withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 1) } }
        _ = try [UInt8(1)].withUnsafeBytes { try disk.pwrite(fd, from: $0, at: 1) }
        #expect(try disk.availableBytes("") == 8, "\(disk.usedBytes)")
        try disk.unlink("f")
        disk.close(fd)
        #expect(try disk.availableBytes("") == 10, "an unlinked, closed file gives its space back")
        disk.maxOpenFiles = 1
        let a = try disk.open("", .directory)
        #expect(throws: SystemError(EMFILE)) { _ = try disk.open("", .directory) }
        disk.close(a)
    }
}
