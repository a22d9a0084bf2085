// `streamrec demo`: the whole job on an embedded Kafka (librdkafka's in-process mock cluster).
// A synthetic clickstream with learnable structure; the transition model trained on its first
// part; the real serving stack (same Pipeline as `serve`) on the rest; a downstream reader that
// measures what a user of the output topic would see: throughput, end-to-end latency, HR@10.
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import StreamRecKafka
import StreamRecModels
import StreamRecStorage

public struct DemoOptions: Sendable {
    /// The model served: any catalogue kind that trains without text embeddings (default sasrec).
    public var model = "sasrec"
    /// SASRec training epochs on the demo's training part.
    public var epochs = 25
    public var users = 2000
    public var clusters = 40
    public var itemsPerCluster = 50
    public var eventsPerUser = 30
    /// Share of each user's events (oldest first) used to train; the rest are streamed.
    public var trainFraction = 0.5
    /// Paced input rate for the latency phase (events/s).
    public var rate = 2000
    public var seed: UInt64 = 7
    public var topologyPath = "topology/topics.yaml"
    public var metricsPort = -1
    public var liveLines = 8
    /// at_least_once, or exactly_once (one transaction per micro-batch; to measure its cost).
    public var delivery: DeliveryMode = .atLeastOnce
    public init() {}
}

public struct DemoSummary: Sendable {
    public var trainedOn: Int
    public var streamed: Int
    public var backlogEvents: Int
    public var backlogSeconds: Double
    public var pacedEvents: Int
    public var pacedRate: Double
    public var latencyP50Ms: Double
    public var latencyP99Ms: Double
    /// The p50 of the two halves: event sent -> answer produced, and answer produced -> read.
    public var inboundP50Ms: Double
    public var outboundP50Ms: Double
    public var hitRate10: Double
    public var popularityHitRate10: Double
    public var hitTrials: Int
    public var recommendations: Int
    public var wallSeconds: Double
    /// Seconds per pipeline stage over the whole stream, with the batch and record counts.
    public var stages: [(stage: String, seconds: Double)] = []
    public var batches = 0
    public var batchRecords = 0

    public var eventsPerSecond: Double { Double(backlogEvents) / max(backlogSeconds, 1e-9) }
}

public enum Demo {
    public static func run(options: DemoOptions, logger: Logger, print say: @escaping @Sendable (String) -> Void) async throws -> DemoSummary {
        let wallStart = Date()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-demo-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }

        // 1. An embedded cluster with the declared topics. (librdkafka's mock broker keeps about
        //    5 MB per partition and drops older data: the defaults stay well below.)
        //    Without a topology file (the demo run outside the repository) it uses its defaults;
        //    a file that does not parse is an error, never silently replaced.
        let topology = FileManager.default.fileExists(atPath: options.topologyPath)
            ? try Topology.load(path: options.topologyPath) : DemoDefaults.topology
        let cluster = try MockCluster(brokers: 3)
        defer { cluster.shutdown() }
        for topic in topology.topics {
            // Replicas inside one process protect nothing and slow acks=all down.
            try cluster.createTopic(topic.name, partitions: topic.partitions, replication: 1)
        }
        let input = topology.topic(role: "input")?.name ?? "interactions"
        let output = topology.topic(role: "output")?.name ?? "recommendations"
        let dlq = topology.topic(role: "dlq")?.name ?? "interactions.dlq"
        let changelog = topology.topic(role: "changelog")?.name ?? "sessions.changelog"
        say("embedded Kafka (librdkafka mock cluster, 3 brokers, replication 1) at \(cluster.bootstrapServers); topics: \(topology.topics.map { "\($0.name)(\($0.partitions))" }.joined(separator: ", "))")

        // 2. Synthetic clickstream; train on each user's first part.
        var gen = SyntheticClickstreamConfig()
        gen.users = options.users
        gen.clusters = options.clusters
        gen.itemsPerCluster = options.itemsPerCluster
        gen.eventsPerUser = options.eventsPerUser
        gen.seed = options.seed
        let stream = SyntheticClickstream(config: gen)
        let events = stream.events()
        var perUserCount: [String: Int] = [:]
        for e in events { perUserCount[e.user, default: 0] += 1 }
        var seen: [String: Int] = [:]
        var train: [String: [String]] = [:]
        var live: [SyntheticEvent] = []
        for e in events {
            let index = seen[e.user, default: 0]
            seen[e.user] = index + 1
            if Double(index) < Double(perUserCount[e.user]!) * options.trainFraction {
                train[e.user, default: []].append(e.item)
            } else {
                live.append(e)
            }
        }
        let trainSequences = train.keys.sorted().map { train[$0]! }
        // The transition model also gives the popularity baseline of the summary.
        let model = TransitionModel.train(sequences: trainSequences, config: TransitionConfig())
        let snapshotPath = work.appendingPathComponent("\(options.model).snap").path
        say("synthetic clickstream: \(options.users) users drifting through \(options.clusters) item clusters; training on \(events.count - live.count) events, streaming \(live.count)")
        // Any catalogue model; the demo's preset (a short window, few epochs) applies where the
        // model has those settings. Every item of the training part trains: the live half is the real test.
        let trainStart = Date()
        let dataset = SequenceDataset(sequences: train.keys.sorted().map { ($0, train[$0]!) }, source: "demo")
        let family: CatalogueEntry
        do { family = try ModelCatalogue.standard.trainer(for: options.model) } catch {
            throw ConfigError(key: "model", source: "demo", message: "\(error)")
        }
        let preset = ["max_length": "50", "epochs": "\(options.epochs)", "eval_every": "\(options.epochs)", "learning_rate": "0.002"]
        let trained = try family.train(TrainingJob(kind: options.model, dataset: dataset, holdout: .none, source: "demo"),
                                       settings: family.applicable(preset))
        try ModelCatalogue.save(trained.model, trainingSequences: trainSequences, to: snapshotPath)
        say(String(format: "%@ in %.1f s%@", trained.summary, Date().timeIntervalSince(trainStart),
                   trained.history.last.map { String(format: ", %.0f sequences/s", $0.sequencesPerSecond) } ?? ""))

        // 3. The serving stack, exactly as `serve` builds it.
        var config = StreamRecConfig()
        config.kafka.brokers = cluster.bootstrapServers
        config.kafka.inputTopic = input
        config.kafka.outputTopic = output
        config.kafka.dlqTopic = dlq
        config.kafka.changelogTopic = changelog
        config.delivery = options.delivery
        config.kafka.instanceID = "demo"          // the transactional.id base in exactly-once mode
        config.kafka.staticMembership = false
        config.kafka.groupID = "streamrec-demo"
        config.state.directory = work.appendingPathComponent("state").path
        config.model.snapshot = snapshotPath
        config.metrics.port = options.metricsPort
        // The mock broker answers a fetch only when fetch.wait.max.ms expires if no data was there
        // when it arrived (a real broker wakes up on new data), so poll it more often.
        config.kafka.consumerProperties["fetch.wait.max.ms"] = "5"
        let registry = PrometheusCollectorRegistry()
        let metrics = PipelineMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let stack = try ServingStack(config: config, metrics: metrics, logger: logger)
        var services: [any Service] = [PipelineService(stack: stack, logger: logger)]
        if options.metricsPort >= 0 {
            services.append(MetricsServer(host: config.metrics.host, port: options.metricsPort, registry: registry, logger: logger,
                                          health: { [health = stack.pipeline.health] in health.problem(nowMs: Pipeline.nowMs()) }))
        }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // 4. Throughput: a backlog of the first part of the live stream, in the input topic before
        // the service starts, so the figure is the pipeline's own drain rate, not the rate this
        // process can produce at.
        let producer = try KafkaProducer(KafkaClients.bulkProducer(brokers: cluster.bootstrapServers, lingerMs: 5))
        let backlogCount = live.count / 2
        let backlog = Array(live[..<backlogCount])
        let paced = Array(live[backlogCount...])
        try await onDedicatedThread(name: "demo-producer") {
            for e in backlog { try producer.send(DemoDefaults.record(e, topic: input, ts: Pipeline.nowMs())) }
            guard producer.flush(timeoutMs: 30_000) else {
                throw PipelineError(code: .kafka, message: "demo: the backlog was not acknowledged within 30 s")
            }
        }

        // 5. A downstream reader of the output topic, then the service.
        let reader = try DemoReader(brokers: cluster.bootstrapServers, topic: output, liveLines: options.liveLines, say: say)
        let readerTask = Task { try await onDedicatedThread(name: "demo-reader") { try reader.run() } }
        let serving = Task { try await group.run() }
        // Throughput from the answers' arrival times (first to last), so the group join and the
        // model loading are not counted: (N - 1) answers over the span between first and last.
        try await reader.waitFor(count: backlogCount, timeoutSeconds: 90)
        let span = reader.arrivalSpan()
        let backlogSeconds = span.seconds * Double(backlogCount) / Double(max(span.count - 1, 1))
        say(String(format: "backlog of %d events answered at %.0f events/s", backlogCount, Double(backlogCount) / max(backlogSeconds, 1e-9)))
        let drained = stack.pipeline.clock.read()
        say(String(format: "  in %d micro-batches (%.0f records each); the pipeline's time: %@", drained.batches,
                   Double(drained.records) / Double(max(drained.batches, 1)),
                   drained.seconds.map { String(format: "%@ %.3f s", $0.stage.rawValue, $0.seconds) }.joined(separator: ", ")))

        // 6. Latency: the rest at a steady rate, each event stamped with its send time.
        reader.startLatencyWindow()
        let rate = Double(options.rate)
        try await onDedicatedThread(name: "demo-producer") {
            let start = Date()
            for (i, e) in paced.enumerated() {
                let due = start.addingTimeInterval(Double(i) / rate)
                let wait = due.timeIntervalSinceNow
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                try producer.send(DemoDefaults.record(e, topic: input, ts: Pipeline.nowMs()))
                producer.poll()
            }
            _ = producer.flush(timeoutMs: 30_000)
        }
        try await reader.waitFor(count: live.count, timeoutSeconds: 90)
        producer.close()
        await group.triggerGracefulShutdown()
        try await serving.value
        reader.stop()
        _ = try? await readerTask.value

        // 6. What the stream earned: HR@10 of each answer against the user's next real event.
        let answers = reader.answersByUser()
        var nextItems: [String: [String]] = [:]
        for e in live { nextItems[e.user, default: []].append(e.item) }
        var hits = 0, popularHits = 0, trials = 0
        let popular = model.popularItems(limit: 200)
        for (user, items) in nextItems {
            let recs = answers[user] ?? []
            var history = Set(train[user] ?? [])
            for i in 0..<(items.count - 1) {
                history.insert(items[i])
                guard i < recs.count else { continue }
                trials += 1
                if recs[i].prefix(10).contains(items[i + 1]) { hits += 1 }
                if popular.lazy.filter({ !history.contains($0) }).prefix(10).contains(items[i + 1]) { popularHits += 1 }
            }
        }
        let clock = stack.pipeline.clock.read()
        let timed = reader.latencies()
        func pct(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        return DemoSummary(trainedOn: events.count - live.count, streamed: live.count, backlogEvents: backlogCount,
                           backlogSeconds: backlogSeconds, pacedEvents: paced.count, pacedRate: rate,
                           latencyP50Ms: pct(timed.total, 0.50), latencyP99Ms: pct(timed.total, 0.99),
                           inboundP50Ms: pct(timed.inbound, 0.50), outboundP50Ms: pct(timed.outbound, 0.50),
                           hitRate10: Double(hits) / Double(max(trials, 1)), popularityHitRate10: Double(popularHits) / Double(max(trials, 1)),
                           hitTrials: trials, recommendations: reader.count, wallSeconds: Date().timeIntervalSince(wallStart),
                           stages: clock.seconds.map { ($0.stage.rawValue, $0.seconds) }, batches: clock.batches, batchRecords: clock.records)
    }
}

enum DemoDefaults {
    static let topology = Topology(consumerGroup: "streamrec", topics: [
        .init(name: "interactions", role: "input", partitions: 6, replication: 1, config: [:]),
        .init(name: "recommendations", role: "output", partitions: 6, replication: 1, config: [:]),
        .init(name: "interactions.dlq", role: "dlq", partitions: 1, replication: 1, config: [:]),
        .init(name: "sessions.changelog", role: "changelog", partitions: 6, replication: 1, config: ["cleanup.policy": "compact"]),
    ])

    static func record(_ e: SyntheticEvent, topic: String, ts: Int64) -> KafkaRecord {
        let json = "{\"user\":\"\(e.user)\",\"item\":\"\(e.item)\",\"ts\":\(ts),\"type\":\"\(e.type)\"}"
        return KafkaRecord(topic: topic, key: Array(e.user.utf8), value: Array(json.utf8))
    }
}

/// Reads the output topic like a downstream app: prints a few answers, times each one from the
/// event's send time to its arrival here, and keeps every user's answers in order.
final class DemoReader: @unchecked Sendable {
    private let consumer: KafkaConsumer
    private let lock = NSLock()
    private var stopped = false
    private var received = 0
    private var first: Date?
    private var last: Date?
    private var latencyWindow = false
    /// Answers as they arrived; parsed after the run, so the reader's JSON parsing does not take
    /// CPU from the pipeline while its figures are measured (the demo runs on the same cores).
    private var arrivals: [(value: [UInt8], arrivedMs: Double, timed: Bool)] = []
    private var printed = 0
    private let liveLines: Int
    private let say: @Sendable (String) -> Void

    init(brokers: String, topic: String, liveLines: Int, say: @escaping @Sendable (String) -> Void) throws {
        consumer = try KafkaConsumer(KafkaClients.outputReader(brokers: brokers, group: "streamrec-demo-reader"))
        try consumer.subscribe([topic])
        self.liveLines = liveLines
        self.say = say
    }

    func run() throws {
        while !isStopped {
            let batch = try consumer.poll(maxMessages: 1000, timeoutMs: 100)
            let now = Date()
            for m in batch { handle(m, now) }
        }
        consumer.close()
    }

    private struct Answer {
        var user: String
        var partition: Int32
        var offset: Int64
        var items: [String]
        var eventItem: String
        var model: String
        var eventTs: Int64?
        var producedAt: Int64?
    }

    private static func parse(_ value: [UInt8]) -> Answer? {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
              let user = obj["user"] as? String,
              let items = obj["items"] as? [[String: Any]],
              let source = obj["source"] as? [String: Any],
              let partition = (source["partition"] as? NSNumber)?.int32Value,
              let offset = (source["offset"] as? NSNumber)?.int64Value else { return nil }
        let model = (obj["model"] as? [String: Any]).map { "\($0["name"] ?? "?")@\($0["version"] ?? "?")" } ?? "?"
        return Answer(user: user, partition: partition, offset: offset, items: items.compactMap { $0["item"] as? String },
                      eventItem: obj["event_item"] as? String ?? "?", model: model,
                      eventTs: (obj["event_ts"] as? NSNumber)?.int64Value, producedAt: (obj["produced_at"] as? NSNumber)?.int64Value)
    }

    private func handle(_ m: KafkaMessage, _ now: Date) {
        guard let value = m.value else { return }
        lock.lock()
        received += 1
        if first == nil { first = now }
        if !latencyWindow { last = now }
        arrivals.append((value, now.timeIntervalSince1970 * 1000, latencyWindow))
        let shouldPrint = printed < liveLines && latencyWindow
        if shouldPrint { printed += 1 }
        lock.unlock()
        if shouldPrint, let a = Self.parse(value) {
            say("  \(a.user) clicked \(a.eventItem) -> \(a.items.prefix(5).joined(separator: " ")) …  [\(a.model), \(m.topic)[\(m.partition)]@\(m.offset)]")
        }
    }

    /// Every answer parsed (once, after the run), with when it arrived and whether it was timed.
    private var parsed: (arrivals: Int, answers: [(answer: Answer, arrivedMs: Double, timed: Bool)])?
    private func parsedAnswers() -> [(answer: Answer, arrivedMs: Double, timed: Bool)] {
        lock.lock(); defer { lock.unlock() }
        if let parsed, parsed.arrivals == arrivals.count { return parsed.answers }
        let answers = arrivals.compactMap { a in Self.parse(a.value).map { ($0, a.arrivedMs, a.timed) } }
        parsed = (arrivals.count, answers)
        return answers
    }

    /// Timed answers: event sent -> answer read (ms), and its two halves: sent -> produced (input
    /// topic, poll, processing) and produced -> read (delivery, output topic, the reader's fetch).
    func latencies() -> (total: [Double], inbound: [Double], outbound: [Double]) {
        var total: [Double] = [], inbound: [Double] = [], outbound: [Double] = []
        for (a, arrived, timed) in parsedAnswers() where timed {
            guard let ts = a.eventTs else { continue }
            total.append(arrived - Double(ts))
            if let produced = a.producedAt {
                inbound.append(Double(produced - ts))
                outbound.append(arrived - Double(produced))
            }
        }
        return (total, inbound, outbound)
    }

    private var latencyWindowOpen: Bool { lock.lock(); defer { lock.unlock() }; return latencyWindow }
    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    var count: Int { lock.lock(); defer { lock.unlock() }; return received }
    /// Time between the first and the last answer before the latency window, and how many.
    func arrivalSpan() -> (seconds: Double, count: Int) {
        lock.lock(); defer { lock.unlock() }
        guard let first, let last else { return (0, 0) }
        return (last.timeIntervalSince(first), received)
    }
    func stop() { lock.lock(); stopped = true; lock.unlock() }
    func startLatencyWindow() { lock.lock(); latencyWindow = true; lock.unlock() }

    func waitFor(count target: Int, timeoutSeconds: Double) async throws {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while count < target {
            if Date() > deadline {
                throw PipelineError(code: .kafka, message: "demo: only \(count) of \(target) recommendations arrived within \(Int(timeoutSeconds)) s")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Each user's answers in source order (one partition per user, so offsets order them).
    func answersByUser() -> [String: [[String]]] {
        var byUser: [String: [(offset: Int64, items: [String])]] = [:]
        for (a, _, _) in parsedAnswers() { byUser[a.user, default: []].append((a.offset, a.items)) }
        return byUser.mapValues { list in
            var seen = Set<Int64>()
            return list.sorted { $0.offset < $1.offset }.filter { seen.insert($0.offset).inserted }.map(\.items)
        }
    }
}
