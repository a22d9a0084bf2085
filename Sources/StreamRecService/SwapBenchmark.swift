// `streamrec bench --only swap`: what a model swap costs the stream. The real serving stack (the
// same Pipeline and ModelWatcher as `serve --registry`) on the embedded mock cluster, a paced
// event stream stamped with its send time, a downstream reader timing every answer, and version
// 2 promoted and announced through the registry mid-run. Compares end-to-end latency in the
// steady state before the swap with a window around it.
import Foundation
import Logging
import Prometheus
import StreamRecKafka
import StreamRecModels

public struct SwapBenchmarkOptions: Sendable {
    /// Any catalogue kind that trains without text embeddings (tiny versions: d=32, 2 epochs).
    public var model = "sasrec"
    /// Paced input rate (events/s).
    public var rate = 1000
    /// Length of the paced stream (s).
    public var seconds = 20.0
    /// When version 2 is announced, from the start of the paced stream (s).
    public var swapAt = 10.0
    /// Skipped at the start of the stream before the steady window opens (s).
    public var settle = 2.0
    /// The swap window: from `swapWindowBefore` s before the announcement to `swapWindowAfter` s after it.
    public var swapWindowBefore = 1.0
    public var swapWindowAfter = 4.0
    public var users = 2000
    public var seed: UInt64 = 11
    public init() {}
}

public struct SwapBenchmarkResult: Sendable {
    public struct Window: Sendable {
        public var answers: Int
        public var p50Ms: Double
        public var p99Ms: Double
        public var maxMs: Double
    }
    public var model: String
    public var rate: Int
    public var events: Int
    public var answers: Int
    /// Answers by version 1 and by version 2 (every event answered once when their sum is `events`).
    public var byVersion: [String: Int]
    public var steady: Window
    public var swap: Window
    /// Announcement to the new version serving (s).
    public var swapSeconds: Double
    public var p99Ratio: Double { swap.p99Ms / steady.p99Ms }
    public var p50Ratio: Double { swap.p50Ms / steady.p50Ms }
}

public enum SwapBenchmark {
    /// Blocking (threads for the pipeline, watcher, producer and reader): call it off the
    /// cooperative pool.
    public static func run(options o: SwapBenchmarkOptions, logger: Logger, say: @escaping @Sendable (String) -> Void) throws -> SwapBenchmarkResult {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-swapbench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let cluster = try MockCluster(brokers: 1)
        defer { cluster.shutdown() }
        let (input, output, dlq, updates) = ("interactions", "recommendations", "interactions.dlq", "model-updates")
        try cluster.createTopic(input, partitions: 6, replication: 1)
        try cluster.createTopic(output, partitions: 6, replication: 1)
        try cluster.createTopic(dlq, partitions: 1, replication: 1)
        try cluster.createTopic(updates, partitions: 1, replication: 1)
        try cluster.createTopic("sessions.changelog", partitions: 6, replication: 1)

        // Data: the first half of each user's clicks trains both versions (v2 on another seed or
        // setting, so a different snapshot); the second half is streamed.
        var gen = SyntheticClickstreamConfig()
        gen.users = o.users
        gen.clusters = 40
        gen.eventsPerUser = 30
        gen.seed = o.seed
        let events = SyntheticClickstream(config: gen).events()
        var perUser: [String: Int] = [:]
        var train: [String: [String]] = [:]
        var live: [SyntheticEvent] = []
        for e in events {
            let i = perUser[e.user, default: 0]
            perUser[e.user] = i + 1
            if i < gen.eventsPerUser / 2 { train[e.user, default: []].append(e.item) } else { live.append(e) }
        }
        let dataset = SequenceDataset(sequences: train.keys.sorted().map { ($0, train[$0]!) }, source: "swap-bench")
        let paths = [work.appendingPathComponent("v1.snap").path, work.appendingPathComponent("v2.snap").path]
        let trainStart = Date()
        let family: CatalogueEntry
        do { family = try ModelCatalogue.standard.trainer(for: o.model) } catch {
            throw ConfigError(key: "model", source: "bench", message: "\(error)")
        }
        for (index, path) in paths.enumerated() {
            // Two tiny versions that differ (seed; successors for the transition model).
            let preset = ["width": "32", "max_length": "50", "epochs": "2", "eval_every": "2", "learning_rate": "0.002",
                          "seed": "\(42 + index)", "successors_per_item": index == 0 ? "50" : "40"]
            let job = TrainingJob(kind: o.model, dataset: dataset, holdout: .none, source: "swap-bench v\(index + 1)")
            let trained = try family.train(job, settings: family.applicable(preset))
            try ModelCatalogue.save(trained.model, trainingSequences: job.trainingSequences, to: path)
        }
        say(String(format: "trained two %@ versions in %.1f s", o.model, Date().timeIntervalSince(trainStart)))
        let registry = try ModelRegistry(root: work.appendingPathComponent("registry").path, create: true)
        let v1 = try registry.publish(snapshotPath: paths[0], dataWindow: "v1").version
        try registry.promote(v1)
        let v2Entry = try registry.publish(snapshotPath: paths[1], dataWindow: "v2")
        let v2 = v2Entry.version

        var config = StreamRecConfig()
        config.kafka.brokers = cluster.bootstrapServers
        config.kafka.inputTopic = input
        config.kafka.outputTopic = output
        config.kafka.dlqTopic = dlq
        config.kafka.modelUpdatesTopic = updates
        config.kafka.groupID = "streamrec-swapbench"
        config.state.directory = work.appendingPathComponent("state").path
        config.model.registry = registry.root.path
        config.model.registryPollMs = 600_000        // the announcement path, not the pointer poll
        config.metrics.port = -1
        // As in the demo: the mock broker answers an empty fetch only when fetch.wait.max.ms expires.
        config.kafka.consumerProperties["fetch.wait.max.ms"] = "5"
        let metrics = PipelineMetrics(factory: PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()))
        let stack = try ServingStack(config: config, metrics: metrics, logger: logger)
        let watcher = ModelWatcher(stack: stack, registry: registry, metrics: metrics, logger: logger)
        let pipelineDone = DispatchSemaphore(value: 0), watcherDone = DispatchSemaphore(value: 0)
        startThread("swapbench-pipeline") {
            do { try stack.pipeline.run() } catch { logger.error("pipeline failed: \(error)") }
            stack.close()
            pipelineDone.signal()
        }
        startThread("swapbench-watcher") { watcher.run(); watcherDone.signal() }
        let reader = try SwapReader(brokers: cluster.bootstrapServers, topic: output)
        let readerDone = DispatchSemaphore(value: 0)
        startThread("swapbench-reader") { reader.run(); readerDone.signal() }

        let producer = try KafkaProducer(KafkaClients.bulkProducer(brokers: cluster.bootstrapServers, lingerMs: 1))
        // Warm up: the group join and first answers, outside every window.
        let warmUp = 200
        for e in live.prefix(warmUp) { try producer.send(DemoDefaults.record(e, topic: input, ts: Pipeline.nowMs())) }
        _ = producer.flush(timeoutMs: 30_000)
        try reader.waitFor(count: warmUp, timeoutSeconds: 60)
        say("serving \(v1); streaming \(o.rate) events/s for \(Int(o.seconds)) s, announcing \(v2) at \(Int(o.swapAt)) s")

        let paced = Array(live.dropFirst(warmUp).prefix(Int(Double(o.rate) * o.seconds)))
        let start = Date()
        let startMs = Pipeline.nowMs()
        let swapMarks = SwapMarks()
        let modelName = config.model.name
        startThread("swapbench-announcer") {
            Thread.sleep(until: start.addingTimeInterval(o.swapAt))
            let announced = Pipeline.nowMs()
            do {
                try registry.promote(v2)
                try ModelAnnouncer.announce(ModelAnnouncement(registry: registry, manifest: v2Entry, action: "promote"), name: modelName,
                                            brokers: cluster.bootstrapServers, topic: updates)
            } catch { logger.error("swap benchmark: promote/announce failed: \(error)") }
            while stack.model.recommender.descriptor.version != v2 && Date().timeIntervalSince(start) < o.seconds + 30 {
                Thread.sleep(forTimeInterval: 0.001)
            }
            swapMarks.set(announced: announced, served: Pipeline.nowMs())
        }
        for (i, e) in paced.enumerated() {
            let due = start.addingTimeInterval(Double(i) / Double(o.rate))
            if due.timeIntervalSinceNow > 0 { Thread.sleep(until: due) }
            try producer.send(DemoDefaults.record(e, topic: input, ts: Pipeline.nowMs()))
            producer.poll()
        }
        _ = producer.flush(timeoutMs: 30_000)
        producer.close()
        try reader.waitFor(count: warmUp + paced.count, timeoutSeconds: 60)
        Thread.sleep(forTimeInterval: 0.5)    // a repeated answer would show up here
        watcher.stop.stop()
        stack.stop.stop()
        pipelineDone.wait()
        watcherDone.wait()
        reader.stop()
        readerDone.wait()

        guard let (announcedMs, servedMs) = swapMarks.get() else {
            throw PipelineError(code: .kafka, message: "swap benchmark: version 2 was never served")
        }
        let answers = reader.answers()
        let pacedAnswers = answers.filter { $0.eventTs >= startMs }
        func window(_ range: Range<Int64>) -> SwapBenchmarkResult.Window {
            let latencies = pacedAnswers.filter { range.contains($0.eventTs) }.map(\.latencyMs).sorted()
            func pct(_ p: Double) -> Double { latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
            return .init(answers: latencies.count, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: latencies.last ?? .nan)
        }
        let steady = window((startMs + Int64(o.settle * 1000))..<(announcedMs - Int64(o.swapWindowBefore * 1000)))
        let swap = window((announcedMs - Int64(o.swapWindowBefore * 1000))..<(announcedMs + Int64(o.swapWindowAfter * 1000)))
        var byVersion: [String: Int] = [:]
        for a in answers { byVersion[a.version, default: 0] += 1 }
        return SwapBenchmarkResult(model: o.model, rate: o.rate, events: warmUp + paced.count, answers: answers.count, byVersion: byVersion,
                                   steady: steady, swap: swap, swapSeconds: Double(servedMs - announcedMs) / 1000)
    }

    private static func startThread(_ name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

private final class SwapMarks: @unchecked Sendable {
    private let lock = NSLock()
    private var marks: (Int64, Int64)?
    func set(announced: Int64, served: Int64) { lock.withLock { marks = (announced, served) } }
    func get() -> (Int64, Int64)? { lock.withLock { marks } }
}

/// The downstream reader: every answer's event time (= its send time), latency and version.
private final class SwapReader: @unchecked Sendable {
    struct Answer { var eventTs: Int64; var latencyMs: Double; var version: String }
    private let consumer: KafkaConsumer
    private let lock = NSLock()
    private var stopped = false
    private var received: [Answer] = []

    init(brokers: String, topic: String) throws {
        consumer = try KafkaConsumer(KafkaClients.outputReader(brokers: brokers, group: "swapbench-reader-\(UUID().uuidString.prefix(8))"))
        try consumer.subscribe([topic])
    }

    func run() {
        while !lock.withLock({ stopped }) {
            guard let batch = try? consumer.poll(maxMessages: 1000, timeoutMs: 50) else { continue }
            let nowMs = Date().timeIntervalSince1970 * 1000
            var parsed: [Answer] = []
            for m in batch {
                guard let value = m.value, let obj = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
                      let ts = (obj["event_ts"] as? NSNumber)?.int64Value,
                      let version = (obj["model"] as? [String: Any])?["version"] as? String else { continue }
                parsed.append(Answer(eventTs: ts, latencyMs: nowMs - Double(ts), version: version))
            }
            lock.withLock { received += parsed }
        }
        consumer.close()
    }

    var count: Int { lock.withLock { received.count } }
    func answers() -> [Answer] { lock.withLock { received } }
    func stop() { lock.withLock { stopped = true } }

    func waitFor(count target: Int, timeoutSeconds: Double) throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while count < target {
            if Date() > deadline {
                throw PipelineError(code: .kafka, message: "swap benchmark: only \(count) of \(target) answers arrived within \(Int(timeoutSeconds)) s")
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }
}
