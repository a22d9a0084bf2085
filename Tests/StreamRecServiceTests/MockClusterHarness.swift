import Foundation
import Logging
import Metrics
import Prometheus
import StreamRecKafka
import StreamRecModels
import StreamRecStorage
@testable import StreamRecService

/// A librdkafka mock cluster with a fresh set of topics, a trained model, and helpers to run the
/// real serving stack against it and read what it wrote.
final class MockClusterHarness: @unchecked Sendable {
    let cluster: MockCluster
    let id = UUID().uuidString.prefix(8).lowercased()
    let input: String
    let output: String
    let dlq: String
    let changelog: String
    let work: URL
    let snapshot: String

    /// `snapshot`: serve this file instead of a transition model trained on the sequences.
    init(partitions: Int = 3, trainingSequences: [[String]], snapshot givenSnapshot: ((URL) throws -> String)? = nil) throws {
        cluster = try MockCluster(brokers: 1)
        input = "interactions-\(id)"
        output = "recommendations-\(id)"
        dlq = "interactions-\(id).dlq"
        changelog = "sessions-\(id).changelog"
        try cluster.createTopic(input, partitions: partitions)
        try cluster.createTopic(changelog, partitions: partitions)
        try cluster.createTopic(output, partitions: partitions)
        try cluster.createTopic(dlq, partitions: 1)
        work = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-test-\(id)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        if let givenSnapshot {
            snapshot = try givenSnapshot(work)
        } else {
            snapshot = work.appendingPathComponent("model.snap").path
            try TransitionModel.train(sequences: trainingSequences, config: TransitionConfig()).save(to: snapshot)
        }
    }

    deinit {
        cluster.shutdown()
        try? FileManager.default.removeItem(at: work)
    }

    var stateDirectory: String { work.appendingPathComponent("state").path }

    func config(group: String = "streamrec") -> StreamRecConfig {
        var c = StreamRecConfig()
        c.kafka.brokers = cluster.bootstrapServers
        c.kafka.inputTopic = input
        c.kafka.outputTopic = output
        c.kafka.dlqTopic = dlq
        c.kafka.changelogTopic = changelog
        c.kafka.groupID = "\(group)-\(id)"
        c.state.directory = stateDirectory
        c.model.snapshot = snapshot
        c.pipeline.pollTimeoutMs = 20
        return c
    }

    func produce(_ records: [(key: String?, value: [UInt8])], topic: String? = nil, headers: [KafkaHeader] = []) throws {
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "linger.ms": "5", "log_level": "3"])
        for r in records {
            try producer.send(KafkaRecord(topic: topic ?? input, key: r.key.map { Array($0.utf8) }, value: r.value, headers: headers))
        }
        guard producer.flush(timeoutMs: 30_000) else { throw HarnessError("test producer flush timed out") }
        let failures = producer.takeDeliveryFailures()
        guard failures.isEmpty else { throw HarnessError("\(failures.count) test records undelivered: \(failures[0].error)") }
        producer.close()
    }

    /// The real stack on a thread; returns a handle to stop it and wait. With `model.registry`
    /// set, the model watcher runs on a second thread, as in `serve`.
    /// `ingestor`: also run the cold-start item ingestor (cache + embedder) on a third thread.
    func startService(config: StreamRecConfig? = nil,
                      ingestor: ((ServingStack, PipelineMetrics) throws -> ItemIngestor)? = nil) throws -> RunningService {
        let registry = PrometheusCollectorRegistry()
        let metrics = PipelineMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let config = config ?? self.config()
        let stack = try ServingStack(config: config, metrics: metrics, logger: Self.logger)
        let watcher = try config.model.registry.map { ModelWatcher(stack: stack, registry: try ModelRegistry(root: $0), metrics: metrics, logger: Self.logger) }
        let service = RunningService(stack: stack, metrics: metrics, watcher: watcher, ingestor: try ingestor?(stack, metrics))
        service.registry = registry
        return service
    }

    static let logger: Logger = {
        var logger = Logger(label: "test") { StreamLogHandler.standardError(label: $0) }
        // STREAMREC_TEST_LOG=info (or debug, ...) shows the services' logs when a test needs a look.
        logger.logLevel = ProcessInfo.processInfo.environment["STREAMREC_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return logger
    }()

    /// Reads a topic from the beginning until `until` holds or the timeout passes.
    func read(_ topic: String, timeoutSeconds: Double = 60, isolation: String = "read_uncommitted",
              until: ([KafkaMessage]) -> Bool) throws -> [KafkaMessage] {
        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": cluster.bootstrapServers, "group.id": "reader-\(UUID().uuidString)",
                                                      "auto.offset.reset": "earliest", "fetch.wait.max.ms": "10", "log_level": "3",
                                                      "isolation.level": isolation])
        try consumer.subscribe([topic])
        defer { consumer.close() }
        var all: [KafkaMessage] = []
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline && !until(all) {
            all += try consumer.poll(maxMessages: 1000, timeoutMs: 100)
        }
        return all
    }

    /// What a downstream app with isolation.level=read_committed sees: no aborted transaction's records.
    func readCommitted(_ topic: String, timeoutSeconds: Double = 60, until: ([KafkaMessage]) -> Bool) throws -> [KafkaMessage] {
        try read(topic, timeoutSeconds: timeoutSeconds, isolation: "read_committed", until: until)
    }
}

final class RunningService: @unchecked Sendable {
    let stack: ServingStack
    let metrics: PipelineMetrics
    let watcher: ModelWatcher?
    let ingestor: ItemIngestor?
    private let done = DispatchSemaphore(value: 0)
    private let watcherDone = DispatchSemaphore(value: 0)
    private let ingestorDone = DispatchSemaphore(value: 0)
    private(set) var error: Error?
    var registry: PrometheusCollectorRegistry?

    /// The value of a metric series as /metrics shows it (`name` may include labels), or nil.
    func metric(_ name: String) -> Double? {
        guard let text = registry.map({ String(decoding: $0.emitToBuffer(), as: UTF8.self) }) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1))
        }
        return nil
    }

    /// Waits until the pipeline thread ends by itself (it failed); true if it did.
    func waitForFailure(seconds: Double) -> Bool {
        guard done.wait(timeout: .now() + seconds) == .success else { return false }
        done.signal()   // stop() waits on it too
        return true
    }

    init(stack: ServingStack, metrics: PipelineMetrics, watcher: ModelWatcher? = nil, ingestor: ItemIngestor? = nil) {
        self.stack = stack
        self.metrics = metrics
        self.watcher = watcher
        self.ingestor = ingestor
        if let ingestor {
            Thread { [self] in
                ingestor.run()
                ingestorDone.signal()
            }.start()
        }
        let thread = Thread { [self] in
            do { try stack.pipeline.run() } catch { self.error = error }
            stack.close()
            done.signal()
        }
        thread.start()
        if let watcher {
            let watch = Thread { [self] in
                watcher.run()
                watcherDone.signal()
            }
            watch.start()
        }
    }

    /// Graceful stop: finish the batch, flush, commit, leave the group, close LevelDB.
    func stop() {
        watcher?.stop.stop()
        ingestor?.stop.stop()
        if ingestor != nil { ingestorDone.wait() }
        stack.stop.stop()
        done.wait()
        if watcher != nil { watcherDone.wait() }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
