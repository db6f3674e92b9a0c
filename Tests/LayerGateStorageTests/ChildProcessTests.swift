import Foundation
import LayerGateTestSupport
import Testing

/// The children tests start (moto, layergated) must meet signals and
/// descriptors as children of a shell do, whatever thread starts them.
@Suite("Test support: children started as a shell starts them")
struct ChildProcessTests {
    /// Started from a thread of Swift's pool, whose libdispatch mask blocks
    /// SIGTERM: the child still ends at a SIGTERM, at once (moto, started by
    /// Foundation's Process, ignored it until the SIGKILL 5 s later).
    @Test func aSigtermEndsItAtOnce() async throws {
        let child = try ChildProcess(executable: "/bin/sleep", arguments: ["30"])
        #expect(child.isRunning)
        let start = ContinuousClock.now
        kill(child.processIdentifier, SIGTERM)
        #expect(await child.exited() == 128 + SIGTERM)
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(!child.isRunning && child.terminationStatus == 128 + SIGTERM)
    }

    /// Nothing blocked, nothing ignored; and no descriptor of this process
    /// but stdio, even one opened without O_CLOEXEC.
    @Test func itInheritsNoMaskAndNoDescriptors() async throws {
        let dir = TemporaryDirectory("child")
        let leaked = open(dir.path + "/leak", O_RDWR | O_CREAT, 0o600)
        defer { close(leaked) }
        #expect(leaked > 2)
        let report = dir.path + "/report"
        let child = try ChildProcess(executable: "/bin/sh", arguments: ["-c", "grep -E '^Sig(Blk|Ign)' /proc/$$/status; ls /proc/$$/fd"],
                                     stdout: .file(report))
        #expect(await child.exited() == 0)
        let lines = try String(contentsOfFile: report, encoding: .utf8).split(separator: "\n")
        func mask(_ name: String) -> UInt64? {
            lines.first { $0.hasPrefix(name + ":") }.flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        }
        #expect(mask("SigBlk") == 0, "\(lines)")
        // Signals 1-31; glibc keeps 32 and 33 for itself, and no sigaction reaches them.
        #expect(mask("SigIgn").map { $0 & 0x7fff_ffff } == 0, "\(lines)")
        let descriptors = lines.compactMap { Int32($0) }.filter { $0 > 2 }
        // The shell's own (it may hold its script or a dup of stdio above 2) are its; this process's are not there.
        #expect(!descriptors.contains(leaked), "the child holds descriptor \(leaked): \(lines)")
    }
}
