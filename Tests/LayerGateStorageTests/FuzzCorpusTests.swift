import Foundation
import LayerGateFuzz
import Testing

/// Every committed fuzz input (the seeds, and each crash `make fuzz` found,
/// kept as `Fuzz/corpus/<target>/regression-*`) runs through its target in
/// process: a regression traps this test run.
@Suite("Fuzz corpus replay")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus").path

    @Test(arguments: FuzzTarget.allCases)
    func everyCommittedInputRunsClean(target: FuzzTarget) throws {
        let dir = Self.corpus + "/" + target.rawValue
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(!files.isEmpty, "no seeds in \(dir)")
        for file in files {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file)))
            bytes.withUnsafeBytes { target.run($0) }
        }
    }

    /// The seeds are what the writers make today: a format change shows up here.
    @Test(arguments: FuzzTarget.allCases)
    func theSeedsAreCurrent(target: FuzzTarget) throws {
        for (name, bytes) in try FuzzSeeds.seeds(for: target) {
            let path = Self.corpus + "/" + target.rawValue + "/seed-" + name
            #expect(FileManager.default.contents(atPath: path).map { [UInt8]($0) } == bytes,
                    "\(path) is stale: run .build/debug/layergate-fuzz --write-seeds Fuzz/corpus")
        }
    }
}
