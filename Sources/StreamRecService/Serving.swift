// Assembles the serving stack from a config (LevelDB, vocabulary, model, Kafka clients, pipeline)
// and runs the pipeline as a lifecycle Service on its own thread.
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import StreamRecKafka
import StreamRecModels
import StreamRecNumerics
import StreamRecStorage

public enum ModelLoader {
    /// A verified, decoded model not yet bound to a vocabulary: the expensive part of a load,
    /// which a hot reload does off the event path.
    public struct Decoded {
        let loaded: LoadedModel
        public let kind: String
        public let version: String
        public let items: [String]
    }

    /// Reads a snapshot, verifies it and builds the model its manifest names (through the
    /// catalogue, which refuses an unknown kind with the list of known ones).
    public static func decode(path: String, catalogue: ModelCatalogue = .standard) throws -> Decoded {
        let snapshot = try Snapshot.read(path: path)
        let loaded = try catalogue.load(snapshot)
        return Decoded(loaded: loaded, kind: snapshot.manifest.kind, version: snapshot.manifest.modelVersion, items: snapshot.manifest.items)
    }

    /// Reads a snapshot, verifies it, builds the model its manifest names, and binds it to this
    /// instance's item vocabulary (new items are added and persisted before the model serves).
    public static func load(path: String, vocabulary: Vocabulary, store: KeyValueStore, options: ServingOptions = .init(),
                            catalogue: ModelCatalogue = .standard) throws -> CatalogueRecommender {
        try bind(try decode(path: path, catalogue: catalogue), vocabulary: vocabulary, store: store, options: options)
    }

    /// Binds a decoded model to the vocabulary (through the one serving adapter) and persists the
    /// ids it added. The vocabulary is single-threaded: callers hold the pipeline's vocabulary
    /// lock once the pipeline runs.
    public static func bind(_ decoded: Decoded, vocabulary: Vocabulary, store: KeyValueStore, options: ServingOptions = .init()) throws -> CatalogueRecommender {
        let recommender = CatalogueRecommender(decoded.loaded, options: options) { vocabulary.idOrAssign($0) }
        if vocabulary.hasPending {
            var writes = WriteBatch()
            vocabulary.stagePending(into: &writes)
            try store.write(writes, sync: true)
            vocabulary.didCommitPending()
        }
        return recommender
    }
}

extension StreamRecConfig {
    /// What the serving adapter needs from the config.
    var servingOptions: ServingOptions { ServingOptions(cacheUsers: model.cacheUsers, coldUsers: recommend.coldUsers) }
}

public final class ServingStack: @unchecked Sendable {
    public let config: StreamRecConfig
    public let store: KeyValueStore
    public let sessions: SessionStore
    public let vocabulary: Vocabulary
    public let model: RecommenderSlot
    public let pipeline: Pipeline
    public let stop = StopSignal()
    /// Vocabulary growth during a reload must not interleave with another reload, nor with close.
    private let reloadLock = NSLock()
    private var closed = false

    public init(config: StreamRecConfig, metrics: PipelineMetrics, logger: Logger) throws {
        guard let brokers = config.kafka.brokers, !brokers.isEmpty else {
            throw ConfigError(key: "kafka.brokers", source: "serve", message: "no brokers configured; pass --brokers host:port (or STREAMREC_KAFKA_BROKERS), or run `streamrec demo` for an embedded cluster")
        }
        let snapshot = try Self.snapshotToServe(config)
        self.config = config
        store = try KeyValueStore(path: config.state.directory)
        sessions = SessionStore(store: store, policy: config.session)
        vocabulary = try Vocabulary(store: store)
        let recommender = try ModelLoader.load(path: snapshot, vocabulary: vocabulary, store: store, options: config.servingOptions)
        if config.recommend.coldUsers == .popularity && !recommender.hasPopularity {
            logger.warning("the snapshot has no item popularity (written before item_popularity); users with no known item get no answer until it is retrained",
                           metadata: ["snapshot": "\(snapshot)"])
        }
        model = RecommenderSlot(recommender)
        logger.info("serving model", metadata: ["name": "\(recommender.descriptor.name)", "version": "\(recommender.descriptor.version)",
                                                "vocabulary": "\(vocabulary.count)", "openblas_kernels": "\(BLAS.kernelCore)",
                                                "workers": "\(Parallel.workers)"])
        if config.delivery == .exactlyOnce && config.kafka.instanceID == nil {
            throw ConfigError(key: "kafka.instance_id", source: "serve", message: "delivery: exactly_once needs a stable instance name (its transactional.id, which fences a zombie of the same instance); set kafka.instance_id (--instance-id, STREAMREC_KAFKA_INSTANCE_ID), unique within the group")
        }
        let consumer = try KafkaConsumer(KafkaClients.consumer(config, brokers: brokers))
        let producer = try KafkaProducer(KafkaClients.producer(config, brokers: brokers))
        let restorer = try ChangelogRestorer(config: config, brokers: brokers, sessions: sessions, vocabulary: vocabulary, metrics: metrics, logger: logger)
        pipeline = Pipeline(config: config, consumer: consumer, producer: producer, sessions: sessions, vocabulary: vocabulary,
                            model: model, restorer: restorer, metrics: metrics, logger: logger, stop: stop)
    }

    /// `model.snapshot`, else the registry's current version (verified against its manifest).
    static func snapshotToServe(_ config: StreamRecConfig) throws -> String {
        if let snapshot = config.model.snapshot { return snapshot }
        guard let root = config.model.registry else {
            throw ConfigError(key: "model.snapshot", source: "serve", message: "no model to serve; pass --snapshot PATH (train one with `streamrec train --model transition --data DIR --out PATH`) or --registry DIR with a promoted version")
        }
        let registry = try ModelRegistry(root: root)
        guard let current = try registry.currentVersion() else {
            throw ConfigError(key: "model.registry", source: "serve", message: "registry \(root) has no current version; publish and promote one (`streamrec models publish --registry \(root) --snapshot PATH`, then `streamrec models promote VERSION --registry \(root)`) or pass --snapshot PATH")
        }
        return try registry.verifiedSnapshotPath(current)
    }

    /// Loads, verifies and swaps in another snapshot between micro-batches. A snapshot that
    /// fails verification throws (naming the problem) and the current model keeps serving.
    ///
    /// Call it off the event path (the model watcher's thread): reading, verifying and decoding
    /// run while the pipeline keeps serving; only binding the model's items to the vocabulary
    /// waits for the current micro-batch to end. `expectedChecksum` (the registry's "fnv1a64:..."),
    /// `expectedVersion` and `warmUpRequests` (a few inferences before the swap, which also check
    /// the model answers) are optional extra checks. The pipeline reads the slot once per batch, so
    /// the swap takes effect between micro-batches; per-user caches belong to the old model and go with it.
    @discardableResult
    public func reloadModel(path: String, expectedVersion: String? = nil, expectedChecksum: String? = nil, warmUpRequests: Int = 0,
                            metrics: PipelineMetrics, logger: Logger) throws -> ModelDescriptor {
        do {
            if let expectedChecksum {
                try ModelRegistry.verify(path: path, checksum: expectedChecksum, version: expectedVersion ?? path)
            }
            let decoded = try ModelLoader.decode(path: path)
            if let expectedVersion, decoded.version != expectedVersion {
                throw RegistryError(.corrupt, "\(path) holds model version \(decoded.version), not the announced \(expectedVersion); the registry directory was altered by hand: publish the snapshot again")
            }
            let (next, warmUpItems) = try reloadLock.withLock { () throws -> (any Recommender, [ItemID]) in
                guard !closed else { throw PipelineError(code: .storage, message: "the service is shutting down; reload not done") }
                return try pipeline.withVocabulary {
                    let next = try ModelLoader.bind(decoded, vocabulary: vocabulary, store: store, options: config.servingOptions)
                    return (next, decoded.items.prefix(max(0, warmUpRequests) + 1).compactMap { vocabulary.id(for: $0) })
                }
            }
            if warmUpRequests > 0 {
                // First calls pay for lazy allocations (scratch buffers, BLAS threads); pay them here.
                let requests = (0..<warmUpRequests).map { i in
                    RecommendationRequest(user: "streamrec-warmup-\(i)", history: Array(warmUpItems.prefix(i % max(1, warmUpItems.count) + 1)),
                                          k: config.recommend.k, exclude: [])
                }
                let answers = next.recommend(requests)
                guard answers.count == requests.count, answers.allSatisfy({ $0.count <= config.recommend.k }) else {
                    throw ModelError(.badSnapshot, "snapshot \(path): warm-up gave \(answers.count) answers to \(requests.count) requests; the model is unusable, retrain it")
                }
            }
            model.swap(next)
            metrics.modelReloaded(failed: false)
            logger.info("model swapped", metadata: ["name": "\(next.descriptor.name)", "version": "\(next.descriptor.version)"])
            return next.descriptor
        } catch {
            metrics.modelReloaded(failed: true)
            logger.error("model refused; the current one keeps serving", metadata: ["path": "\(path)", "error": "\(error)",
                                                                                   "serving": "\(model.recommender.descriptor.version)"])
            throw error
        }
    }

    /// Runs `body` between micro-batches with the vocabulary to itself, unless the service is
    /// closing (LevelDB may be gone): for writers off the pipeline thread (the item ingestor).
    func withVocabularyWhileOpen<T>(_ body: () throws -> T) throws -> T {
        try reloadLock.withLock {
            guard !closed else { throw PipelineError(code: .storage, message: "the service is shutting down; not done") }
            return try pipeline.withVocabulary(body)
        }
    }

    /// Closes LevelDB (after the pipeline has stopped).
    public func close() {
        reloadLock.withLock {
            closed = true
            store.close()
        }
    }
}

/// Runs the pipeline loop on a dedicated thread (librdkafka and LevelDB calls block) and turns
/// graceful shutdown (SIGTERM/SIGINT via ServiceGroup) into: stop fetching, finish the batch,
/// flush output, write LevelDB, leave the group.
public final class PipelineService: Service, @unchecked Sendable {
    let stack: ServingStack
    let logger: Logger

    public init(stack: ServingStack, logger: Logger) {
        self.stack = stack
        self.logger = logger
    }

    public func run() async throws {
        let stack = self.stack
        try await runUntilStopped(thread: "streamrec-pipeline", stop: stack.stop) {
            defer { stack.close() }
            try stack.pipeline.run()
        }
    }
}
