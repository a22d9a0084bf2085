// The micro-batch loop: Kafka in, LevelDB sessions, one batched model call, Kafka out.
//
// Delivery guarantees (docs/architecture.md):
// - Session state is exactly-once: a batch's session updates, new vocabulary ids and each
//   partition's next offset go into ONE LevelDB write batch, written only after every output of
//   the batch was acknowledged. On (re)assignment a partition resumes from the offset in LevelDB.
// - Output is at-least-once: a crash after delivery but before the LevelDB write replays the batch.
// - A partition whose local offset is behind the group's committed offset (it moved here from
//   another instance) is replayed to rebuild sessions, without output below the committed offset.
import Foundation
import Logging
import StreamRecKafka
import StreamRecModels
import StreamRecStorage

public struct PipelineError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable { case delivery, storage, kafka }
    public let code: Code
    public let message: String
    public var description: String { "pipeline \(code.rawValue) error: \(message)" }
}

/// The model being served; swapped between micro-batches (hot reload reads it once per batch).
public final class RecommenderSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var current: any Recommender
    public init(_ recommender: any Recommender) { current = recommender }
    public var recommender: any Recommender {
        lock.lock(); defer { lock.unlock() }
        return current
    }
    public func swap(_ new: any Recommender) {
        lock.lock(); current = new; lock.unlock()
    }
}

/// A flag the service sets from any thread; the loop checks it between batches.
public final class StopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    public init() {}
    public func stop() { lock.lock(); stopped = true; lock.unlock() }
    public var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
}

/// Liveness for /healthz: when the loop last completed a poll.
public final class PipelineHealth: @unchecked Sendable {
    private let lock = NSLock()
    private var lastPollMs: Int64 = 0
    private var failure: String?
    public init() {}
    func polled(at ms: Int64) { lock.lock(); lastPollMs = ms; lock.unlock() }
    func failed(_ why: String) { lock.lock(); failure = why; lock.unlock() }
    /// nil when healthy, else why not.
    public func problem(nowMs: Int64, staleAfterMs: Int64 = 30_000) -> String? {
        lock.lock(); defer { lock.unlock() }
        if let failure { return failure }
        if lastPollMs == 0 { return "starting" }
        if nowMs - lastPollMs > staleAfterMs { return "no poll for \(nowMs - lastPollMs) ms" }
        return nil
    }
}

public final class Pipeline: PartitionAssignmentListener, @unchecked Sendable {
    let config: StreamRecConfig
    let consumer: KafkaConsumer
    let producer: KafkaProducer
    let sessions: SessionStore
    let vocabulary: Vocabulary
    let model: RecommenderSlot
    let metrics: PipelineMetrics
    let logger: Logger
    let stop: StopSignal
    public let health = PipelineHealth()

    /// Per partition: offsets below this were already answered by some instance of the group.
    private var emitFrom: [TopicPartition: Int64] = [:]
    /// Largest event time seen; the TTL sweep measures idleness against it, not the wall clock,
    /// so replays of old data behave exactly like live traffic.
    private var eventTimeWatermark: Int64 = 0
    private var lastLagUpdate = 0.0
    /// Last offset seen per partition, to notice records a broker let the consumer skip.
    private var lastOffset: [TopicPartition: Int64] = [:]
    /// Held for each whole micro-batch. Vocabulary is single-threaded; a hot reload binds the new
    /// model's items to it under this lock, so that happens between micro-batches.
    private let vocabularyLock = NSLock()

    public init(config: StreamRecConfig, consumer: KafkaConsumer, producer: KafkaProducer, sessions: SessionStore,
                vocabulary: Vocabulary, model: RecommenderSlot, metrics: PipelineMetrics, logger: Logger, stop: StopSignal) {
        self.config = config
        self.consumer = consumer
        self.producer = producer
        self.sessions = sessions
        self.vocabulary = vocabulary
        self.model = model
        self.metrics = metrics
        self.logger = logger
        self.stop = stop
    }

    /// Runs until the stop signal is set, then drains and leaves the group. Blocking: call it on
    /// a dedicated thread.
    public func run() throws {
        consumer.listener = self
        consumer.onError = { [logger, metrics] error in
            metrics.consumerErrors.increment()
            logger.warning("consumer: \(error.message)")
        }
        try consumer.subscribe([config.kafka.inputTopic])
        logger.info("consuming", metadata: ["topic": "\(config.kafka.inputTopic)", "group": "\(config.kafka.groupID)"])
        do {
            while !stop.isStopped {
                let batch = try consumer.poll(maxMessages: config.pipeline.maxBatch, timeoutMs: config.pipeline.pollTimeoutMs)
                health.polled(at: Self.nowMs())
                if !batch.isEmpty {
                    try process(batch)
                } else {
                    producer.poll()
                }
                updateLagIfDue()
            }
        } catch {
            health.failed("\(error)")
            consumer.close()
            producer.close(flushTimeoutMs: config.pipeline.drainTimeoutMs)
            throw error
        }
        logger.info("stopping: leaving the group")
        // close() revokes our partitions on this thread; partitionsRevoked commits what is left.
        consumer.close()
        producer.close(flushTimeoutMs: config.pipeline.drainTimeoutMs)
        logger.info("stopped")
    }

    // MARK: one micro-batch

    private struct Answer {
        var message: KafkaMessage
        var event: InteractionEvent
    }

    /// Runs `body` between micro-batches with the vocabulary to itself (any thread).
    func withVocabulary<T>(_ body: () throws -> T) rethrows -> T {
        vocabularyLock.lock()
        defer { vocabularyLock.unlock() }
        return try body()
    }

    func process(_ batch: [KafkaMessage]) throws {
        vocabularyLock.lock()
        defer { vocabularyLock.unlock() }
        metrics.eventsIn.increment(by: batch.count)
        metrics.batchSize.record(batch.count)
        var staged: [String: Session] = [:]
        var nextOffsets: [TopicPartition: Int64] = [:]
        var requests: [RecommendationRequest] = []
        var answers: [Answer] = []
        var outputs: [KafkaRecord] = []
        let k = config.recommend.k

        for message in batch {
            let tp = message.topicPartition
            if let last = lastOffset[tp], message.offset != last + 1 {
                // The input topic is not compacted and not transactional: offsets are contiguous
                // unless the broker skipped records. Count it; there is nothing to re-read.
                metrics.offsetGaps.increment()
                logger.warning("offset gap on \(tp): \(last) then \(message.offset)")
            }
            lastOffset[tp] = message.offset
            nextOffsets[tp] = message.offset + 1
            switch EventParser.parse(key: message.key, value: message.value, rules: config.events) {
            case .failure(let rejection):
                metrics.deadLettered(rejection.code)
                outputs.append(deadLetter(message, rejection))
            case .success(let event):
                metrics.eventsValid.increment()
                let item = vocabulary.idOrAssign(event.item)
                var session: Session
                if let s = staged[event.user] {
                    session = s
                } else {
                    session = try storage { try sessions.session(for: event.user, nowMs: event.timestampMs) }
                }
                session.append(item: item, timestampMs: event.timestampMs, maxItems: config.session.maxItems)
                staged[event.user] = session
                eventTimeWatermark = max(eventTimeWatermark, event.timestampMs)
                if message.offset >= emitFrom[message.topicPartition] ?? 0 {
                    requests.append(RecommendationRequest(user: event.user, history: session.items, k: k,
                                                          exclude: exclusion(session.items)))
                    answers.append(Answer(message: message, event: event))
                } else {
                    metrics.rebuilt.increment()
                }
            }
        }

        if !requests.isEmpty {
            let recommender = model.recommender
            let start = DispatchTime.now().uptimeNanoseconds
            let ranked = recommender.recommend(requests)
            metrics.inference.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            let producedAt = Self.nowMs()
            for (answer, items) in zip(answers, ranked) {
                outputs.append(recommendationRecord(answer, items, recommender.descriptor, producedAt))
            }
        }

        try deliver(outputs)
        let deliveredAt = Self.nowMs()
        for answer in answers {
            if let ts = answer.message.timestampMs {
                metrics.endToEnd.recordMilliseconds(max(0, deliveredAt - ts))
            }
        }
        metrics.recommendationsOut.increment(by: answers.count)

        // Commit point: sessions, new vocabulary ids and offsets, atomically.
        var writes = WriteBatch()
        vocabulary.stagePending(into: &writes)
        for session in staged.values { sessions.stage(session, into: &writes) }
        for (tp, next) in nextOffsets {
            sessions.stageOffset(topic: tp.topic, partition: tp.partition, nextOffset: next, into: &writes)
        }
        try storage { try sessions.commit(writes, sessions: Array(staged.values)) }
        vocabulary.didCommitPending()

        do {
            try consumer.commit(nextOffsets, async: true)
        } catch {
            logger.warning("group offset commit failed (LevelDB holds the truth; lag metrics may lag): \(error)")
        }
        if config.pipeline.sweepPerBatch > 0 {
            let swept = (try? sessions.sweepExpired(nowMs: eventTimeWatermark, limit: config.pipeline.sweepPerBatch)) ?? 0
            if swept > 0 { metrics.sessionsExpired.increment(by: swept) }
        }
    }

    private func exclusion(_ items: [ItemID]) -> Set<ItemID> {
        switch config.recommend.exclude {
        case .none: return []
        case .seen: return Set(items)
        case .recent(let n): return Set(items.suffix(n))
        }
    }

    private func storage<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw PipelineError(code: .storage, message: "LevelDB: \(error)")
        }
    }

    /// Sends every record and waits until all are acknowledged, resending the ones that failed for
    /// good. Blocks through broker outages (that is the backpressure); gives up only when stopping.
    private func deliver(_ records: [KafkaRecord]) throws {
        guard !records.isEmpty else { return }
        for (i, record) in records.enumerated() {
            try kafka { try producer.send(record, token: i) }
        }
        var stoppingSince: Double? = nil
        while true {
            while !producer.flush(timeoutMs: 500) {
                if stop.isStopped {
                    let since = stoppingSince ?? Date().timeIntervalSince1970
                    stoppingSince = since
                    if (Date().timeIntervalSince1970 - since) * 1000 > Double(config.pipeline.drainTimeoutMs) {
                        throw PipelineError(code: .delivery, message: "\(producer.pendingCount) output records undelivered at shutdown; the batch will be replayed on restart")
                    }
                }
                logger.debug("waiting for \(producer.pendingCount) deliveries")
            }
            if let fatal = producer.fatalError() { throw PipelineError(code: .kafka, message: fatal.message) }
            let failures = producer.takeDeliveryFailures()
            if failures.isEmpty { return }
            metrics.deliveryRetries.increment(by: failures.count)
            logger.warning("\(failures.count) deliveries failed (\(failures[0].error.message)); resending")
            if stop.isStopped {
                throw PipelineError(code: .delivery, message: "deliveries failing at shutdown; the batch will be replayed on restart")
            }
            Thread.sleep(forTimeInterval: 0.5)
            for f in failures.sorted(by: { $0.token < $1.token }) {
                try kafka { try producer.send(records[f.token], token: f.token) }
            }
        }
    }

    private func kafka(_ body: () throws -> Void) throws {
        do { try body() } catch let error as KafkaError { throw PipelineError(code: .kafka, message: error.message) }
    }

    // MARK: output records

    private func deadLetter(_ message: KafkaMessage, _ rejection: Rejection) -> KafkaRecord {
        KafkaRecord(topic: config.kafka.dlqTopic, key: message.key, value: message.value ?? [], headers: [
            KafkaHeader("dlq-code", rejection.code.rawValue),
            KafkaHeader("dlq-reason", rejection.reason),
            KafkaHeader("source-topic", message.topic),
            KafkaHeader("source-partition", String(message.partition)),
            KafkaHeader("source-offset", String(message.offset)),
        ])
    }

    private func recommendationRecord(_ answer: Answer, _ items: [ScoredItem], _ model: ModelDescriptor, _ producedAt: Int64) -> KafkaRecord {
        var json = "{\"user\":" + JSONText.quote(answer.event.user) + ",\"items\":["
        var first = true
        for scored in items {
            guard let external = vocabulary.external(for: scored.item) else { continue }
            if !first { json += "," }
            first = false
            json += "{\"item\":" + JSONText.quote(external) + ",\"score\":" + JSONText.number(scored.score) + "}"
        }
        json += "],\"model\":{\"name\":" + JSONText.quote(model.name) + ",\"version\":" + JSONText.quote(model.version) + "}"
        json += ",\"source\":{\"topic\":" + JSONText.quote(answer.message.topic) + ",\"partition\":\(answer.message.partition),\"offset\":\(answer.message.offset)}"
        if let id = answer.event.id { json += ",\"event_id\":" + JSONText.quote(id) }
        json += ",\"event_item\":" + JSONText.quote(answer.event.item) + ",\"event_ts\":\(answer.event.timestampMs)"
        json += ",\"produced_at\":\(producedAt)}"
        return KafkaRecord(topic: config.kafka.outputTopic, key: Array(answer.event.user.utf8), value: Array(json.utf8), headers: [
            KafkaHeader("model-name", model.name),
            KafkaHeader("model-version", model.version),
            KafkaHeader("source-partition", String(answer.message.partition)),
            KafkaHeader("source-offset", String(answer.message.offset)),
        ])
    }

    // MARK: rebalances (called on this thread, inside poll)

    public func partitionsAssigned(_ partitions: [TopicPartition], consumer: KafkaConsumer) -> [TopicPartition: StartOffset] {
        metrics.rebalances.increment()
        var committed: [TopicPartition: Int64] = [:]
        do {
            committed = try consumer.committedOffsets(partitions)
        } catch {
            logger.warning("could not read the group's committed offsets (\(error)); emitting for every replayed event")
        }
        var starts: [TopicPartition: StartOffset] = [:]
        for tp in partitions {
            let local = (try? sessions.nextOffset(topic: tp.topic, partition: tp.partition)) ?? nil
            starts[tp] = local.map { .offset($0) } ?? .beginning
            lastOffset[tp] = local.map { $0 - 1 }
            emitFrom[tp] = committed[tp] ?? 0
            logger.info("assigned \(tp)", metadata: [
                "local_offset": "\(local.map(String.init) ?? "none")",
                "group_committed": "\(committed[tp].map(String.init) ?? "none")",
            ])
        }
        metrics.assignedPartitions.record(partitions.count)
        return starts
    }

    public func partitionsRevoked(_ partitions: [TopicPartition], pending: [KafkaMessage], consumer: KafkaConsumer) {
        logger.info("revoked \(partitions.map(\.description).joined(separator: ", ")) with \(pending.count) pending records")
        if !pending.isEmpty {
            do {
                try process(pending)
            } catch {
                // Not committed to LevelDB: the next owner (or we, on restart) replays them.
                logger.error("could not finish pending records of revoked partitions: \(error)")
            }
        }
        var offsets: [TopicPartition: Int64] = [:]
        for tp in partitions {
            if let next = (try? sessions.nextOffset(topic: tp.topic, partition: tp.partition)) ?? nil { offsets[tp] = next }
            emitFrom[tp] = nil
            lastOffset[tp] = nil
        }
        try? consumer.commit(offsets, async: false)
        metrics.assignedPartitions.record(0)
    }

    private func updateLagIfDue() {
        let now = Date().timeIntervalSince1970
        guard now - lastLagUpdate >= 1 else { return }
        lastLagUpdate = now
        for tp in consumer.assignment() {
            guard let high = consumer.cachedHighWatermark(tp),
                  let next = (try? sessions.nextOffset(topic: tp.topic, partition: tp.partition)) ?? nil else { continue }
            metrics.setLag(partition: tp.partition, max(0, high - next))
        }
    }

    public static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// Minimal JSON text building for the hot path (JSONEncoder costs more than the model call here).
enum JSONText {
    static func quote(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func number(_ f: Float) -> String {
        f.isFinite ? String(format: "%.6g", Double(f)) : "0"
    }
}
