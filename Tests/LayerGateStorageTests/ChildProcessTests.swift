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
    /// but stdio, even one opened without O_CLOEXEC. Each program reads its
    /// own /proc entry: a shell's would show the mask it sets while it forks.
    @Test func itInheritsNoMaskAndNoDescriptors() async throws {
        let dir = TemporaryDirectory("child")
        let opened = open(dir.path + "/leak", O_RDWR | O_CREAT, 0o600)
        // Far above what ls opens for itself.
        let leaked = fcntl(opened, F_DUPFD, 200)
        close(opened)
        defer { close(leaked) }
        #expect(leaked >= 200)
        let masks = dir.path + "/masks", descriptors = dir.path + "/descriptors"
        let grep = try ChildProcess(executable: "/bin/grep", arguments: ["-E", "^Sig(Blk|Ign)", "/proc/self/status"],
                                    stdout: .file(masks))
        let ls = try ChildProcess(executable: "/bin/ls", arguments: ["/proc/self/fd"], stdout: .file(descriptors))
        #expect(await grep.exited() == 0)
        #expect(await ls.exited() == 0)
        let lines = try String(contentsOfFile: masks, encoding: .utf8).split(separator: "\n")
        func mask(_ name: String) -> UInt64? {
            lines.first { $0.hasPrefix(name + ":") }.flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        }
        #expect(mask("SigBlk") == 0, "\(lines)")
        // Signals 1-31; glibc keeps 32 and 33 for itself, and no sigaction reaches them.
        #expect(mask("SigIgn").map { $0 & 0x7fff_ffff } == 0, "\(lines)")
        let open = try String(contentsOfFile: descriptors, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        #expect(!open.contains(leaked) && open.allSatisfy { $0 < 200 }, "the child held this process's descriptors: \(open)")
    }

    /// A command run to its end: one that outlives its deadline is killed and
    /// the run throws (a test fails, never hangs); one that exits without
    /// reading its input costs no broken pipe; a signal is reported as a shell does.
    @Test func aRunToExitEndsWithinItsDeadlineWhateverTheCommandDoes() async throws {
        let start = ContinuousClock.now
        await #expect(throws: DidNotExit.self) { try await runToExit("/bin/sleep", ["30"], deadline: .milliseconds(300)) }
        #expect(ContinuousClock.now - start < .seconds(5))
        let unread = try await runToExit("/bin/true", [], stdin: String(repeating: "x", count: 1 << 20))
        #expect(unread.status == 0)
        let echoed = try await runToExit("/bin/sh", ["-c", "cat; echo done >&2"], stdin: "in\n")
        #expect(echoed.status == 0 && echoed.stdout == "in\n" && echoed.stderr == "done\n")
        // SIGKILL: Foundation's Process passes on the blocked SIGTERM of the thread that starts it.
        #expect(try await runToExit("/bin/sh", ["-c", "kill -KILL $$"]).status == 128 + SIGKILL)
    }
}
