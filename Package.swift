// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "LayerGate",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LayerGateStorage", targets: ["LayerGateStorage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C functions Swift cannot reach from Glibc: renameat2 and hardware CRC32C.
        .target(
            name: "CSystemShims",
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror"])]
        ),
        .target(
            name: "LayerGateStorage",
            dependencies: [
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Release-built measurements of the storage engine (not a test).
        .executableTarget(
            name: "layergate-storage-bench",
            dependencies: ["LayerGateStorage"]
        ),
        // The deterministic workload that the crash helper writes and the tests check.
        .target(
            name: "LayerGateTestSupport",
            dependencies: ["LayerGateStorage"]
        ),
        // Subprocess driven by the crash tests: ingests, flushes, and dies on cue.
        .executableTarget(
            name: "layergate-testhelper",
            dependencies: ["LayerGateStorage", "LayerGateTestSupport"]
        ),
        .testTarget(
            name: "LayerGateStorageTests",
            dependencies: ["LayerGateStorage", "LayerGateTestSupport", "layergate-testhelper"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
