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
    /// Reads a snapshot, verifies it, and binds it to this instance's item vocabulary (new items
    /// are added to the vocabulary and persisted before the model serves).
    public static func load(path: String, vocabulary: Vocabulary, store: KeyValueStore) throws -> any Recommender {
        let model = try TransitionModel.load(path: path)
        let recommender = model.bind { vocabulary.idOrAssign($0) }
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
        let recommender = try ModelLoader.load(path: snapshot, vocabulary: vocabulary, store: store)
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
