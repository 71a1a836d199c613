// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Kiln",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kiln", targets: ["kiln"]),
        .executable(name: "kiln-protoc", targets: ["kiln-protoc"]),
        .library(name: "KilnHTTP2", targets: ["KilnHTTP2"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        // C libraries, found through pkg-config.
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CVulkan", pkgConfig: "vulkan", providers: [.apt(["libvulkan-dev"])]),

        .target(
            name: "KilnHTTP2",
            dependencies: [
                "CNGHTTP2", "COpenSSL", "CLinux",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Loop-confined state is touched by one thread by construction; dynamic exclusivity checks on
            // every class property access cost ~4% of a request in release builds.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .target(
            name: "KilnRPC",
            dependencies: ["KilnHTTP2"]
        ),
        // The schema generator's parser and emitter (kiln-protoc); depends on nothing of Kiln's.
        .target(name: "KilnProtoc"),
        .executableTarget(name: "kiln-protoc", dependencies: ["KilnProtoc"]),
        .target(
            name: "KilnServer",
            dependencies: ["KilnHTTP2", "KilnRPC", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "kiln",
            dependencies: [
                "KilnHTTP2", "KilnServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "KilnHTTP2Tests",
            dependencies: ["KilnHTTP2", "KilnServer"]
        ),
        .testTarget(
            name: "KilnProtocTests",
            dependencies: ["KilnProtoc"]
        ),
        .testTarget(
            name: "KilnRPCTests",
            dependencies: ["KilnRPC", "KilnHTTP2"],
            exclude: ["grpcio_client.py", "grpcio_server.py"]
        ),
    ]
)
