import Foundation
import LayerGateTestSupport
import LayerGateWire
import Testing

/// Runs the layergate CLI; returns exit status, stdout and stderr.
func runCLI(_ args: [String], stdin: String? = nil) async throws -> (Int32, String, String) {
    let run = try await runToExit(try builtExecutable("layergate").path, args, stdin: stdin)
    return (run.status, run.stdout, run.stderr)
}

@Suite("layergate CLI", .serialized)
struct CLITests {
    @Test func putFromJSONLinesThenReadBack() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let s = ["--socket", dir.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        let image = Data(wpage(7)).base64EncodedString()
        let lines = """
            {"key": {"spc_oid": 1663, "db_oid": 5, "rel_number": 1000, "fork": 0, "block": 7}, "lsn": 10, "image": "\(image)"}
            {"key": {"spc_oid": 1663, "db_oid": 5, "rel_number": 1000, "fork": 0, "block": 7}, "lsn": 11,
            """.replacingOccurrences(of: ",\n", with: ", ") + #" "delta": {"will_init": false, "patches": [{"offset": 0, "data": "AAEC"}]}}"#
        let (status, out, err) = try await runCLI(["--socket", dir.socket, "--json", "put", tenantA, "--file", "-"], stdin: lines)
        #expect(status == 0, "\(err)")
        #expect(out.contains("\"last_record_lsn\":11") && out.contains("\"records\":2"))
        let file = dir.path + "/page.bin"
        #expect(try await runCLI(s + ["get-page", tenantA, "--rel", "1000", "--block", "7", "--lsn", "10", "-o", file]).0 == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == Data(wpage(7)))
        var expected = wpage(7)
        expected.replaceSubrange(0..<3, with: [0, 1, 2])
        let (_, latest, _) = try await runCLI(s + ["--json", "get-page", tenantA, "--rel", "1000", "--block", "7"])
        #expect(latest.contains("\"lsn\":11") && latest.contains(Data(expected).base64EncodedString().prefix(40)))
        let (_, status2, _) = try await runCLI(s + ["--json", "status", tenantA])
        #expect(status2.contains("\"state\":\"active\"") && status2.contains("\"last_record_lsn\":11"))
        // Errors: non-zero exit and the server's message.
        let (bad, _, message) = try await runCLI(s + ["get-page", tenantA, "--rel", "1000", "--block", "8", "--lsn", "10"])
        #expect(bad != 0 && message.contains("PAGE_NOT_FOUND"))
        let (bad2, _, message2) = try await runCLI(s + ["put", tenantA, "--file", "-"], stdin: "{not json}\n")
        #expect(bad2 != 0 && message2.contains("line 1"))
        // Each bad line is refused whole, naming the line and the field.
        let key = #""key": {"spc_oid": 1663, "db_oid": 5, "rel_number": 1000, "fork": 0, "block": 9}"#
        for (line, says) in [
            (#"{"key": {"spc_oid": 1663, "db_oid": 5, "rel_number": 1000, "fork": 0}, "lsn": 20, "image": "AA=="}"#, #"key: missing "block""#),
            ("{\(key.replacingOccurrences(of: "9}", with: "4294967296}")), \"lsn\": 20, \"image\": \"AA==\"}", "key.block"),
            ("{\(key), \"lsn\": 20}", #"needs "image" or "delta""#),
            ("{\(key), \"lsn\": 20, \"image\": \"AA==\", \"delta\": {}}", "both"),
            ("{\(key), \"lsn\": 20, \"image\": \"!!\"}", "image: "),
            ("{\(key), \"lsn\": 20, \"delta\": {\"patches\": [{\"offset\": -1, \"data\": \"AA==\"}]}}", "delta.patches[0].offset"),
            ("[1, 2]", "expected a JSON object"),
        ] {
            let (status, _, err) = try await runCLI(s + ["put", tenantA, "--file", "-"], stdin: "\n" + line + "\n")
            #expect(status != 0 && err.contains("line 2: ") && err.contains(says), "\(line) → \(err)")
        }
        #expect(try await runCLI(s + ["--json", "status", tenantA]).1.contains("\"last_record_lsn\":11"), "a refused file stored something")
        // --generate: its progress line is for a terminal; into a pipe (as here) it writes none.
        let (gen, stored, progress) = try await runCLI(s + ["put", tenantA, "--generate", "100", "--keys", "10"])
        #expect(gen == 0 && stored.contains("stored 100 records"), "\(stored)")
        #expect(!progress.contains("put 100/100 records"), "\(progress)")
        #expect(await server.stop() == 0)
    }
}

@Suite("layergate status --watch", .serialized)
struct StatusWatchTests {
    @Test func watchingIntoAPipeWritesALinePerRefreshWithRatesAndSurvivesARestart() async throws {
        let dir = ServerDir()
        let server = try await ServerProcess(dir: dir)
        let s = ["--socket", dir.socket]
        #expect(try await runCLI(s + ["create-tenant", tenantA]).0 == 0)
        #expect(try await runCLI(s + ["put", tenantA, "--generate", "500"]).0 == 0)
        let (status, out, err) = try await runCLI(s + ["status", tenantA, "--watch", "--interval", "0.1", "--count", "3"])
        let lines = out.split(separator: "\n")
        #expect(status == 0 && lines.count == 3, "\(out)\(err)")
        #expect(lines.allSatisfy { $0.contains("state=active last_record_lsn=500") }, "\(out)")
        #expect(lines.last?.contains("requests_per_sec=") == true && lines.last?.contains("requests_per_sec=-") == false, "\(out)")
        let (_, json, _) = try await runCLI(s + ["--json", "status", tenantA, "--watch", "--interval", "0.1", "--count", "2"])
        #expect(json.split(separator: "\n").count == 2 && json.contains("\"last_record_lsn\":500"), "\(json)")
        // The server goes away: each refresh says so, and the watch goes on.
        #expect(await server.stop() == 0)
        let (gone, down, _) = try await runCLI(s + ["status", "--watch", "--interval", "0.1", "--count", "2"])
        #expect(gone == 0 && down.split(separator: "\n").count == 2 && down.contains("error="), "\(down)")
        #expect(try await runCLI(s + ["status", "--count", "2"]).0 != 0)
    }
}
