import Foundation
import LayerGateFuzz

#if LAYERGATE_FUZZ
// Built with `-sanitize=fuzzer` (make fuzz): libFuzzer drives the target
// named by LAYERGATE_FUZZ_TARGET; its arguments are libFuzzer's.
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
               _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

let selected = ProcessInfo.processInfo.environment["LAYERGATE_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:))

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let target = selected else {
        FileHandle.standardError.write(Data("set LAYERGATE_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    target.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_cdecl("layergate_fuzz_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var args = argv
    return runDriver(&count, &args) { fuzzOne($0, $1) }
}
#else
/// Without libFuzzer: `layergate-fuzz TARGET FILE|DIR...` replays inputs
/// through a target (a crash found by `make fuzz`, or a whole corpus), and
/// `layergate-fuzz --write-seeds DIR` writes the seed corpus.
@main
struct FuzzReplay {
    static func main() throws {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--write-seeds", args.count == 2 {
            for target in FuzzTarget.allCases {
                let dir = args[1] + "/" + target.rawValue
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for (name, bytes) in try FuzzSeeds.seeds(for: target) {
                    try Data(bytes).write(to: URL(fileURLWithPath: dir + "/seed-" + name))
                }
            }
            return
        }
        guard args.count >= 2, let target = FuzzTarget(rawValue: args[0]) else {
            print("usage: layergate-fuzz TARGET FILE|DIR... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            print("       layergate-fuzz --write-seeds DIR")
            exit(2)
        }
        var count = 0
        for path in args.dropFirst() {
            var isDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
            let files = isDir.boolValue ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
                bytes.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("layergate-fuzz: \(count) inputs through \(target.rawValue), no crash")
    }
}
#endif
