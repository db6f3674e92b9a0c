// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "LayerGate",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LayerGateStorage", targets: ["LayerGateStorage"]),
        .library(name: "LayerGateWire", targets: ["LayerGateWire"]),
        .library(name: "LayerGateClient", targets: ["LayerGateClient"]),
        .executable(name: "layergated", targets: ["layergated"]),
        .executable(name: "layergate", targets: ["layergate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C functions and headers Swift cannot reach from Glibc: renameat2, hardware CRC32C, SO_PEERCRED, epoll, eventfd, io_uring.
        .target(
            name: "CSystemShims",
            cSettings: [.enableWarning("all"), .enableWarning("extra")]
        ),
        // One HTTP request through libcurl (Debian: libcurl4-openssl-dev), AWS SigV4 signed by libcurl itself.
        .target(
            name: "CHTTP",
            cSettings: [.enableWarning("all"), .enableWarning("extra")],
            linkerSettings: [.linkedLibrary("curl")]
        ),
        // libprotobuf-c, found through pkg-config (Debian: libprotobuf-c-dev).
        .systemLibrary(
            name: "CProtobufC",
            pkgConfig: "libprotobuf-c",
            providers: [.apt(["libprotobuf-c-dev"])]
        ),
        // protoc-c output for Protocol/layergate.proto (scripts/gen-proto.sh; never edited by hand).
        // It lives in Protocol/c so that the Swift server and the C client compile the same files.
        .target(
            name: "CLayerGateProto",
            dependencies: ["CProtobufC"],
            path: "Protocol/c"
        ),
        // Swift values for every wire message, their protobuf-c conversion, and the frame codec.
        .target(
            name: "LayerGateWire",
            dependencies: [
                "CLayerGateProto",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The SwiftNIO server: connections, dispatch to storage, admin checks.
        .target(
            name: "LayerGateServer",
            dependencies: [
                "LayerGateWire", "LayerGateStorage", "CSystemShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                "LayerGateAuth",
            ]
        ),
        // Tokens: the claims, minting (the CLI) and verification (the server), over jwt-kit's EdDSA.
        .target(
            name: "LayerGateAuth",
            dependencies: [.product(name: "JWTKit", package: "jwt-kit")]
        ),
        .executableTarget(
            name: "layergated",
            dependencies: [
                "LayerGateServer", "LayerGateStorage", "LayerGateWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The Swift client: one connection, pipelined requests, async/await.
        .target(
            name: "LayerGateClient",
            dependencies: [
                "LayerGateWire", "CSystemShims",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "layergate",
            dependencies: [
                "LayerGateClient", "LayerGateWire", "LayerGateStorage", "LayerGateAuth",
                // MountedTmpfs, for torture's real full disk.
                "LayerGateTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "LayerGateStorage",
            dependencies: [
                "CSystemShims", "CHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Release-built measurements of the storage engine (not a test).
        .executableTarget(
            name: "layergate-storage-bench",
            dependencies: ["LayerGateStorage", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The deterministic workload that the crash helper writes and the tests check.
        .target(
            name: "LayerGateTestSupport",
            dependencies: ["LayerGateStorage", "CSystemShims"]
        ),
        // Subprocess driven by the crash tests: ingests, flushes, and dies on cue.
        // Fuzz targets over the Wire decoder and the storage readers (make fuzz), and their replay.
        .target(
            name: "LayerGateFuzz",
            dependencies: [
                "LayerGateWire", "LayerGateStorage", "LayerGateTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "layergate-fuzz",
            dependencies: ["LayerGateFuzz"]
        ),
        .executableTarget(
            name: "layergate-testhelper",
            dependencies: ["LayerGateStorage", "LayerGateTestSupport"]
        ),
        .testTarget(
            name: "LayerGateWireTests",
            dependencies: [
                "LayerGateWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "LayerGateServerTests",
            dependencies: ["LayerGateClient", "LayerGateWire", "LayerGateAuth", "LayerGateServer", "LayerGateTestSupport",
                           "layergated", "layergate",
                           .product(name: "JWTKit", package: "jwt-kit"),
                           .product(name: "NIOEmbedded", package: "swift-nio")]
        ),
        .testTarget(
            name: "LayerGateStorageTests",
            dependencies: ["LayerGateStorage", "LayerGateTestSupport", "LayerGateFuzz", "layergate-testhelper"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// Every warning of this package's own code is an error. These are warning
// settings, not unsafeFlags: a package that depends on LayerGate's libraries
// can still use them (SwiftPM ignores the warning settings of dependencies).
for target in package.targets where target.type != .system {
    if target.name.hasPrefix("C") {
        target.cSettings = (target.cSettings ?? []) + [.treatAllWarnings(as: .error)]
    } else {
        target.swiftSettings = (target.swiftSettings ?? []) + [.treatAllWarnings(as: .error)]
    }
}
