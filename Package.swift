// swift-tools-version:6.0
// StreamRec: a Kafka-fed streaming sequential recommender in Swift.
import PackageDescription

let package = Package(
    name: "StreamRec",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "streamrec", targets: ["streamrec"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C libraries: one system-library target each. Only the internal layer of the
        // matching Swift module touches their pointers.
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka",
                       providers: [.apt(["librdkafka-dev"])]),
        .systemLibrary(name: "CLevelDB", providers: [.apt(["libleveldb-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // Our own C: cpuid, and the elementwise kernels built per x86 ISA level (AVX-512, AVX2,
        // baseline), dispatched at run time. -O3 in every configuration (the tests run them too);
        // no errno from sqrtf, so its loops vectorise.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]),

        // Small data structures shared by the storage and model layers.
        .target(name: "StreamRecCollections"),
        // Kafka client: consumer group member, producer, admin, in-process mock cluster.
        .target(name: "StreamRecKafka", dependencies: ["CRdKafka"]),
        // LevelDB: key-value store, per-user sessions, item vocabulary, partition offsets.
        .target(name: "StreamRecStorage", dependencies: ["CLevelDB", "StreamRecCollections"]),
        // The numeric core: tensors, a reverse-mode tape, fused kernels, optimizers. OpenBLAS only.
        .target(name: "StreamRecNumerics", dependencies: ["COpenBLAS", "CKernels"]),
        // Recommenders, datasets and offline evaluation. No Kafka, no LevelDB.
        .target(name: "StreamRecModels", dependencies: ["COpenBLAS", "StreamRecNumerics", "StreamRecCollections"]),
        // Text: BERT WordPiece tokenizer, safetensors reader, native MiniLM sentence encoder.
        .target(name: "StreamRecText", dependencies: ["COpenBLAS", "StreamRecNumerics"]),
        // Encoder throughput on an items.tsv (ops/bench-minilm.sh); not a product.
        .executableTarget(name: "streamrec-textbench", dependencies: ["StreamRecText"]),
        // The live pipeline: events, config, micro-batch processing, service, metrics, demo.
        .target(name: "StreamRecService", dependencies: [
            "StreamRecKafka", "StreamRecStorage", "StreamRecModels", "StreamRecNumerics", "StreamRecText",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(name: "streamrec", dependencies: [
            "StreamRecService", "StreamRecModels", "StreamRecStorage", "StreamRecKafka", "StreamRecNumerics", "StreamRecText",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        .testTarget(name: "StreamRecStorageTests", dependencies: ["StreamRecStorage", "StreamRecCollections"]),
        .testTarget(name: "StreamRecNumericsTests", dependencies: ["StreamRecNumerics"]),
        .testTarget(name: "StreamRecModelsTests", dependencies: ["StreamRecModels", "StreamRecNumerics"]),
        .testTarget(name: "StreamRecTextTests", dependencies: ["StreamRecText"]),
        .testTarget(name: "StreamRecServiceTests", dependencies: [
            "StreamRecService", "StreamRecKafka", "StreamRecStorage", "StreamRecModels",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)
