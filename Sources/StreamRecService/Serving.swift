// Assembles the serving stack from a config (LevelDB, vocabulary, model, Kafka clients, pipeline)
// and runs the pipeline as a lifecycle Service on its own thread.
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import StreamRecKafka
import StreamRecModels
import StreamRecStorage

public enum ModelLoader {
    /// Reads a snapshot, verifies it, builds the model its manifest names, and binds it to this
    /// instance's item vocabulary (new items are added and persisted before the model serves).
    public static func load(path: String, vocabulary: Vocabulary, store: KeyValueStore, config: StreamRecConfig.Model = .init()) throws -> any Recommender {
        let snapshot = try Snapshot.read(path: path)
        let recommender: any Recommender
        switch snapshot.manifest.kind {
        case TransitionModel.kind:
            recommender = try TransitionModel.load(snapshot).bind { vocabulary.idOrAssign($0) }
        case SASRec.kind:
            recommender = try SASRec.load(snapshot).bind(cacheUsers: config.cacheUsers) { vocabulary.idOrAssign($0) }
        case let kind where DiffuRec.kinds.contains(kind):
            recommender = try DiffuRec.load(snapshot).bind { vocabulary.idOrAssign($0) }
        default:
            throw ModelError(.unsupported, "snapshot \(path): model kind '\(snapshot.manifest.kind)' cannot be served by this build (known: \(([TransitionModel.kind, SASRec.kind] + DiffuRec.kinds).joined(separator: ", "))); upgrade streamrec or pass another snapshot")
        }
        if vocabulary.hasPending {
            var writes = WriteBatch()
            vocabulary.stagePending(into: &writes)
            try store.write(writes, sync: true)
            vocabulary.didCommitPending()
        }
        return recommender
    }
}

public final class ServingStack: @unchecked Sendable {
    public let config: StreamRecConfig
    public let store: KeyValueStore
    public let sessions: SessionStore
    public let vocabulary: Vocabulary
    public let model: RecommenderSlot
    public let pipeline: Pipeline
    public let stop = StopSignal()
    /// Vocabulary growth during a reload must not interleave with another reload.
    private let reloadLock = NSLock()

    public init(config: StreamRecConfig, metrics: PipelineMetrics, logger: Logger) throws {
        guard let brokers = config.kafka.brokers, !brokers.isEmpty else {
            throw ConfigError(key: "kafka.brokers", source: "serve", message: "no brokers configured; pass --brokers host:port (or STREAMREC_KAFKA_BROKERS), or run `streamrec demo` for an embedded cluster")
        }
        guard let snapshot = config.model.snapshot else {
            throw ConfigError(key: "model.snapshot", source: "serve", message: "no model to serve; pass --snapshot PATH (train one with `streamrec train --model transition --data DIR --out PATH`)")
        }
        self.config = config
        store = try KeyValueStore(path: config.state.directory)
        sessions = SessionStore(store: store, policy: config.session)
        vocabulary = try Vocabulary(store: store)
        let recommender = try ModelLoader.load(path: snapshot, vocabulary: vocabulary, store: store, config: config.model)
        model = RecommenderSlot(recommender)
        logger.info("serving model", metadata: ["name": "\(recommender.descriptor.name)", "version": "\(recommender.descriptor.version)",
                                                "vocabulary": "\(vocabulary.count)"])
        let consumer = try KafkaConsumer(properties: Self.consumerProperties(config, brokers: brokers))
        let producer = try KafkaProducer(properties: Self.producerProperties(config, brokers: brokers))
        pipeline = Pipeline(config: config, consumer: consumer, producer: producer, sessions: sessions, vocabulary: vocabulary,
                            model: model, metrics: metrics, logger: logger, stop: stop)
    }

    static func consumerProperties(_ config: StreamRecConfig, brokers: String) -> [String: String] {
        var p: [String: String] = [
            "bootstrap.servers": brokers,
            "group.id": config.kafka.groupID,
            "client.id": config.kafka.clientID,
            "auto.offset.reset": "earliest",
            // A crashed instance's partitions move after this long; the default 45 s is slow for a stream.
            "session.timeout.ms": "10000",
            "heartbeat.interval.ms": "2000",
            "fetch.wait.max.ms": "50",
            "log_level": "4",
        ]
        p.merge(config.kafka.consumerProperties) { _, new in new }
        return p
    }

    static func producerProperties(_ config: StreamRecConfig, brokers: String) -> [String: String] {
        var p: [String: String] = [
            "bootstrap.servers": brokers,
            "client.id": config.kafka.clientID,
            "acks": "all",
            // Idempotence keeps per-partition order through retries (output order per user).
            "enable.idempotence": "true",
            "linger.ms": "1",
            "log_level": "4",
        ]
        p.merge(config.kafka.producerProperties) { _, new in new }
        return p
    }

    /// Loads, verifies and swaps in another snapshot between micro-batches. A snapshot that
    /// fails verification throws (naming the problem) and the current model keeps serving.
    @discardableResult
    public func reloadModel(path: String, metrics: PipelineMetrics, logger: Logger) throws -> ModelDescriptor {
        do {
            let next = try reloadLock.withLock { try ModelLoader.load(path: path, vocabulary: vocabulary, store: store, config: config.model) }
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

    /// Closes LevelDB (after the pipeline has stopped).
    public func close() { store.close() }
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
        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                    let thread = Thread {
                        do {
                            try stack.pipeline.run()
                            stack.close()
                            continuation.resume()
                        } catch {
                            stack.close()
                            continuation.resume(throwing: error)
                        }
                    }
                    thread.name = "streamrec-pipeline"
                    thread.stackSize = 8 << 20
                    thread.start()
                }
            } onCancel: {
                stack.stop.stop()
            }
        } onGracefulShutdown: {
            stack.stop.stop()
        }
    }
}
