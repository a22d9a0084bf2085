// Hot reload: follows the `model-updates` topic and the registry's `current` pointer, and swaps in
// a newly promoted version through ServingStack.reloadModel (verify, decode, bind, warm up, swap).
//
// It runs on its own thread with its own consumer, assigned to every partition of the topic
// (no group: each instance must see every announcement). Announcements are the fast path; the
// pointer, re-read every `model.registry_poll_ms`, covers a missed one (topic missing, broker
// down, an announce that failed after the pointer moved). Both are edge-triggered: the watcher
// acts when a new announcement arrives or the pointer changes, so a refused version is not
// retried in a loop and the newest instruction from either wins.
import Foundation
import Logging
import ServiceLifecycle
import StreamRecKafka
import StreamRecModels

public final class ModelWatcher: @unchecked Sendable {
    let stack: ServingStack
    let registry: ModelRegistry
    let metrics: PipelineMetrics
    let logger: Logger
    public let stop = StopSignal()
    /// Inferences run on a new model before it is swapped in.
    public static let warmUpRequests = 8

    private let lock = NSLock()
    private var swaps = 0
    private var refusals = 0

    public init(stack: ServingStack, registry: ModelRegistry, metrics: PipelineMetrics, logger: Logger) {
        self.stack = stack
        self.registry = registry
        self.metrics = metrics
        self.logger = logger
    }

    /// Reloads done and refused since start (also in streamrec_model_reloads_total).
    public var counts: (swapped: Int, refused: Int) { lock.withLock { (swaps, refusals) } }

    private var config: StreamRecConfig { stack.config }
    private var stopped: Bool { stop.isStopped || stack.stop.isStopped }

    /// Runs until `stop` (or the serving stack's stop signal) is set. Blocking: own thread.
    public func run() {
        // The baseline is what serves, not the pointer as this thread first reads it: a promotion
        // between the stack's start and this thread's first look must still be followed.
        var lastPointer: String? = stack.model.recommender.descriptor.version
        var nextPointerCheck = Date().addingTimeInterval(Double(config.model.registryPollMs) / 1000)
        var announcements: AnnouncementReader? = nil
        var nextConnectAttempt = Date()
        // Each failed connection can block for seconds (metadata lookups), so retries back off,
        // doubling up to a minute, and the registry pointer keeps its own pace in between.
        var retryDelay = Double(config.model.registryPollMs) / 1000
        logger.info("watching for model updates", metadata: [
            "registry": "\(registry.root.path)", "topic": "\(config.kafka.modelUpdatesTopic)", "name": "\(config.model.name)",
            "poll_ms": "\(config.model.registryPollMs)"])
        defer { announcements?.close() }
        while !stopped {
            if announcements == nil, Date() >= nextConnectAttempt {
                do {
                    announcements = try AnnouncementReader(config: config, logger: logger)
                    retryDelay = Double(config.model.registryPollMs) / 1000
                } catch {
                    logger.warning("model announcements unavailable (\(error)); following the registry pointer only, retrying in \(Int(retryDelay * 1000)) ms")
                    nextConnectAttempt = Date().addingTimeInterval(retryDelay)
                    retryDelay = min(60, retryDelay * 2)
                }
            }
            var target: ModelAnnouncement? = nil
            if let reader = announcements {
                do {
                    target = try reader.poll(timeoutMs: 200)
                } catch {
                    logger.warning("model announcements: \(error); reconnecting")
                    reader.close()
                    announcements = nil
                }
            } else {
                Thread.sleep(forTimeInterval: 0.2)
            }
            if Date() >= nextPointerCheck {
                nextPointerCheck = Date().addingTimeInterval(Double(config.model.registryPollMs) / 1000)
                do {
                    let pointer = try registry.currentVersion()
                    if pointer != lastPointer {
                        lastPointer = pointer
                        if target == nil, let pointer {
                            let manifest = try registry.show(pointer)
                            target = ModelAnnouncement(registry: registry, manifest: manifest, action: "pointer")
                        }
                    }
                } catch {
                    logger.warning("cannot read the registry pointer: \(error)")
                }
            }
            if let target, !stopped { apply(target) }
        }
        logger.info("model watcher stopped")
    }

    /// Swaps in the announced version unless it is already serving. Prefers this host's registry
    /// copy (the announcer's absolute path may be another mount), checked against the announced
    /// checksum either way.
    func apply(_ announcement: ModelAnnouncement) {
        let serving = stack.model.recommender.descriptor.version
        guard announcement.version != serving else {
            logger.debug("model \(announcement.version) announced; already serving it")
            return
        }
        let local = registry.snapshotPath(of: announcement.version)
        let path = FileManager.default.fileExists(atPath: local) ? local : announcement.path
        logger.info("loading model", metadata: ["version": "\(announcement.version)", "path": "\(path)", "via": "\(announcement.action ?? "announcement")",
                                                "serving": "\(serving)"])
        do {
            try stack.reloadModel(path: path, expectedVersion: announcement.version, expectedChecksum: announcement.checksum,
                                  warmUpRequests: Self.warmUpRequests, metrics: metrics, logger: logger)
            lock.withLock { swaps += 1 }
        } catch {
            // reloadModel logged and counted it; the current model keeps serving.
            lock.withLock { refusals += 1 }
        }
    }
}

/// The model-updates topic, read whole by one instance: every partition from the beginning. The
/// backlog present at start only sets the baseline (the registry pointer decided what serves at
/// start); it is logged when it disagrees. Later records for this model's name are instructions.
final class AnnouncementReader {
    private let consumer: KafkaConsumer
    private let name: [UInt8]
    private let logger: Logger
    private var backlogEnd: [TopicPartition: Int64]
    private var lastOfBacklog: ModelAnnouncement?

    init(config: StreamRecConfig, logger: Logger) throws {
        guard let brokers = config.kafka.brokers else { throw KafkaError(.config, "no brokers configured") }
        let topic = config.kafka.modelUpdatesTopic
        // Never joins or commits: assign() below.
        consumer = try KafkaConsumer(KafkaClients.modelUpdatesReader(config, brokers: brokers))
        self.name = Array(config.model.name.utf8)
        self.logger = logger
        guard let partitions = try consumer.partitionCount(topic, timeoutMs: 5_000), partitions > 0 else {
            consumer.close()
            throw KafkaError(.config, "topic \(topic) does not exist; create it with `streamrec topics apply` (topology/topics.yaml)")
        }
        var ends: [TopicPartition: Int64] = [:]
        var starts: [TopicPartition: StartOffset] = [:]
        for p in 0..<Int32(partitions) {
            let tp = TopicPartition(topic, p)
            let (low, high) = try consumer.queryWatermarks(tp, timeoutMs: 5_000)
            if high > low { ends[tp] = high }
            starts[tp] = .beginning
        }
        backlogEnd = ends
        try consumer.assign(starts)
        consumer.onError = { error in logger.debug("model announcements consumer: \(error.message)") }
    }

    /// The newest instruction for this model among the records polled now, if any.
    func poll(timeoutMs: Int32) throws -> ModelAnnouncement? {
        var latest: ModelAnnouncement? = nil
        for message in try consumer.poll(maxMessages: 100, timeoutMs: timeoutMs) {
            let tp = message.topicPartition
            let inBacklog = backlogEnd[tp].map { message.offset < $0 } ?? false
            guard message.key == name, let value = message.value else {
                if inBacklog { finishBacklogIfDone(tp, message.offset) }
                continue
            }
            guard let announcement = ModelAnnouncement.decode(value) else {
                logger.warning("model announcement at \(tp)@\(message.offset) is not valid JSON {version, path, kind, checksum, announced_at}; ignored")
                if inBacklog { finishBacklogIfDone(tp, message.offset) }
                continue
            }
            if inBacklog {
                lastOfBacklog = announcement
                finishBacklogIfDone(tp, message.offset)
            } else {
                latest = announcement
            }
        }
        return latest
    }

    private func finishBacklogIfDone(_ tp: TopicPartition, _ offset: Int64) {
        guard let end = backlogEnd[tp], offset + 1 >= end else { return }
        backlogEnd[tp] = nil
        if backlogEnd.isEmpty, let last = lastOfBacklog {
            logger.info("last model announcement before start", metadata: ["version": "\(last.version)", "action": "\(last.action ?? "")"])
        }
    }

    func close() { consumer.close() }
}

/// Runs the watcher on its own thread as a lifecycle Service.
public final class ModelWatcherService: Service, @unchecked Sendable {
    let watcher: ModelWatcher

    public init(watcher: ModelWatcher) { self.watcher = watcher }

    public func run() async throws {
        let watcher = self.watcher
        try await runUntilStopped(thread: "streamrec-model-watcher", stop: watcher.stop) { watcher.run() }
    }
}
