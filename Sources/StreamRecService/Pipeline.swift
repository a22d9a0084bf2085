// The micro-batch loop: Kafka in, LevelDB sessions, one batched model call, Kafka out.
//
// Delivery guarantees (docs/architecture.md):
// - Every micro-batch writes its changed sessions to the sessions changelog (a compacted topic,
//   co-partitioned with the input) together with its answers and dead letters, then a marker per
//   partition that closes the batch. LevelDB is a local copy: a batch's session updates, new
//   vocabulary ids, each partition's next input offset and next changelog offset go into ONE
//   LevelDB write, made only after every record of the batch was acknowledged (or, in exactly-once
//   mode, after the batch's transaction committed). So the changelog is never behind LevelDB.
// - On assignment, a partition whose local state is behind the changelog (it moved here, or we
//   crashed after delivery) is restored from the changelog, then resumes input where the restored
//   state says. It never rebuilds by replaying the input topic, except for a changelog that has
//   no record of the partition while the group has offsets (a deployment that predates it).
// - at_least_once: a crash after delivery but before the LevelDB write answers that batch again.
//   exactly_once: the batch is one transaction with the input offsets; read_committed readers
//   see each answer once.
// - The group's committed offset never moves backwards.
import Foundation
import Logging
import Metrics
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

/// Where micro-batches spend their time, summed per stage (the demo prints it; /metrics exports
/// it as streamrec_pipeline_stage_seconds_total). Cheap: two clock reads per stage per batch.
public final class StageClock: @unchecked Sendable {
    public enum Stage: String, CaseIterable, Sendable {
        /// Waiting in poll for records (idle time included) and copying them out of librdkafka.
        case poll
        /// Parsing and validating events, dead letters.
        case parse
        /// Session reads from the cache or LevelDB, vocabulary ids.
        case state
        /// The model call for the whole batch.
        case inference
        /// Building the output records (JSON).
        case encode
        /// Handing records to the producer and waiting for every acknowledgement.
        case delivery
        /// The LevelDB commit point (synced) and the group offset commit.
        case commit
    }
    private let lock = NSLock()
    private var totals = [UInt64](repeating: 0, count: Stage.allCases.count)
    private var batchCount = 0
    private var recordCount = 0
    private let counters: [FloatingPointCounter]

    public init(factory: MetricsFactory) {
        counters = Stage.allCases.map {
            FloatingPointCounter(label: MetricNames.pipelineStageSeconds, dimensions: [("stage", $0.rawValue)], factory: factory)
        }
    }

    @discardableResult
    func add(_ stage: Stage, since start: UInt64) -> UInt64 {
        let now = DispatchTime.now().uptimeNanoseconds
        add(now - start, to: stage)
        return now
    }

    func add(_ ns: UInt64, to stage: Stage) {
        let index = Stage.allCases.firstIndex(of: stage)!
        lock.lock()
        totals[index] += ns
        lock.unlock()
        counters[index].increment(by: Double(ns) / 1e9)
    }

    func batch(records: Int) {
        lock.lock(); batchCount += 1; recordCount += records; lock.unlock()
    }

    /// Seconds per stage so far, batches and records.
    public func read() -> (seconds: [(stage: Stage, seconds: Double)], batches: Int, records: Int) {
        lock.lock(); defer { lock.unlock() }
        return (zip(Stage.allCases, totals).map { ($0, Double($1) / 1e9) }, batchCount, recordCount)
    }
}

public final class Pipeline: PartitionAssignmentListener, @unchecked Sendable {
    let config: StreamRecConfig
    let consumer: KafkaConsumer
    let producer: KafkaProducer
    let sessions: SessionStore
    let vocabulary: Vocabulary
    let model: RecommenderSlot
    let restorer: ChangelogRestorer
    let metrics: PipelineMetrics
    let logger: Logger
    let stop: StopSignal
    public let health = PipelineHealth()
    public let clock: StageClock

    /// Per partition: offsets below this were already answered by some instance of the group.
    private var emitFrom: [TopicPartition: Int64] = [:]
    /// The highest offset this instance knows the group committed, per owned partition: a commit
    /// never goes below it.
    private var groupCommitted: [TopicPartition: Int64] = [:]
    /// Input partitions this instance owns now.
    private var owned: Set<Int32> = []
    /// Largest event time seen; the TTL sweep measures idleness against it, not the wall clock,
    /// so replays of old data behave exactly like live traffic.
    private var eventTimeWatermark: Int64 = 0
    private var lastLagUpdate = 0.0
    /// Set by a rebalance callback that could not read local state; the loop throws it.
    private var assignmentFailure: PipelineError?
    /// Last offset seen per partition, to notice records a broker let the consumer skip.
    private var lastOffset: [TopicPartition: Int64] = [:]
    /// Held for each whole micro-batch. Vocabulary is single-threaded; a hot reload binds the new
    /// model's items to it under this lock, so that happens between micro-batches.
    private let vocabularyLock = NSLock()

    public init(config: StreamRecConfig, consumer: KafkaConsumer, producer: KafkaProducer, sessions: SessionStore,
                vocabulary: Vocabulary, model: RecommenderSlot, restorer: ChangelogRestorer, metrics: PipelineMetrics, logger: Logger, stop: StopSignal) {
        self.config = config
        self.consumer = consumer
        self.producer = producer
        self.sessions = sessions
        self.vocabulary = vocabulary
        self.model = model
        self.restorer = restorer
        self.metrics = metrics
        self.logger = logger
        self.stop = stop
        clock = StageClock(factory: metrics.factory)
    }

    /// Runs until the stop signal is set, then drains and leaves the group. Blocking: call it on
    /// a dedicated thread.
    public func run() throws {
        consumer.listener = self
        consumer.onError = { [logger, metrics] error in
            metrics.consumerErrors.increment()
            logger.warning("consumer: \(error.message)")
        }
        logger.info("consuming", metadata: ["topic": "\(config.kafka.inputTopic)", "group": "\(config.kafka.groupID)",
                                            "changelog": "\(config.kafka.changelogTopic)", "delivery": "\(config.delivery.rawValue)",
                                            "instance": "\(config.kafka.instanceID ?? "(dynamic member)")",
                                            "standby": "\(config.state.standbyReplicas > 0 ? "every partition not owned" : "off")"])
        do {
            if config.delivery == .exactlyOnce { try initTransactions() }
            try restorer.setStandby(owned: [])
            try consumer.subscribe([config.kafka.inputTopic])
            while !stop.isStopped {
                let pollStart = DispatchTime.now().uptimeNanoseconds
                let batch = try consumer.poll(maxMessages: config.pipeline.maxBatch, timeoutMs: config.pipeline.pollTimeoutMs)
                _ = clock.add(.poll, since: pollStart)
                if let failure = assignmentFailure { throw failure }
                health.polled(at: Self.nowMs())
                if !batch.isEmpty {
                    try process(batch)
                } else {
                    producer.poll()
                }
                try restorer.pollStandby(maxRecords: batch.isEmpty ? 20_000 : 2_000)
                updateLagIfDue()
            }
        } catch {
            health.failed("\(error)")
            restorer.close()
            consumer.close()
            producer.close(flushTimeoutMs: config.pipeline.drainTimeoutMs)
            throw error
        }
        logger.info("stopping: leaving the group")
        // close() revokes our partitions on this thread; partitionsRevoked commits what is left.
        consumer.close()
        restorer.close()
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
        /// Offset of the newest input record applied to each staged session.
        var stagedInputOffset: [String: Int64] = [:]
        var nextOffsets: [TopicPartition: Int64] = [:]
        var requests: [RecommendationRequest] = []
        var answers: [Answer] = []
        var outputs: [KafkaRecord] = []
        let k = config.recommend.k
        clock.batch(records: batch.count)
        var parseNs: UInt64 = 0, stateNs: UInt64 = 0

        for message in batch {
            let parseStart = DispatchTime.now().uptimeNanoseconds
            let tp = message.topicPartition
            if let last = lastOffset[tp], message.offset != last + 1 {
                // The input topic is not compacted and not transactional: offsets are contiguous
                // unless the broker skipped records. Count it; there is nothing to re-read.
                metrics.offsetGaps.increment()
                logger.warning("offset gap on \(tp): \(last) then \(message.offset)")
            }
            lastOffset[tp] = message.offset
            nextOffsets[tp] = message.offset + 1
            let parsed = EventParser.parse(key: message.key, value: message.value, rules: config.events)
            let stateStart = DispatchTime.now().uptimeNanoseconds
            parseNs += stateStart - parseStart
            defer { stateNs += DispatchTime.now().uptimeNanoseconds - stateStart }
            switch parsed {
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
                session.partition = message.partition
                staged[event.user] = session
                stagedInputOffset[event.user] = message.offset
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

        clock.add(parseNs, to: .parse)
        clock.add(stateNs, to: .state)
        if !requests.isEmpty {
            let recommender = model.recommender
            let start = DispatchTime.now().uptimeNanoseconds
            let ranked = recommender.recommend(requests)
            let encodeStart = clock.add(.inference, since: start)
            metrics.inference.recordNanoseconds(Int64(encodeStart - start))
            let producedAt = Self.nowMs()
            for (answer, items) in zip(answers, ranked) {
                outputs.append(recommendationRecord(answer, items, recommender.descriptor, producedAt))
            }
            _ = clock.add(.encode, since: encodeStart)
        }

        // Sessions idle past the TTL in the partitions of this batch leave with it: tombstones in
        // the changelog, deletes in the same LevelDB write.
        let batchPartitions = Set(nextOffsets.keys.map(\.partition))
        var expired: [Session] = []
        if config.pipeline.sweepPerBatch > 0 {
            expired = try storage {
                try sessions.findExpired(nowMs: eventTimeWatermark, limit: config.pipeline.sweepPerBatch) { p in
                    p.map { batchPartitions.contains($0) } ?? false
                }
            }.filter { staged[$0.user] == nil }
        }

        // The changelog records go last, so their tokens (and delivered offsets) are a suffix.
        let changelogFrom = outputs.count
        for session in staged.values {
            let events = try session.events.map { event -> ChangelogRecord.ExternalEvent in
                guard let external = vocabulary.external(for: event.item) else {
                    throw PipelineError(code: .storage, message: "session of \(session.user) holds item id \(event.item), which the vocabulary does not know; the --state directory is damaged")
                }
                return .init(item: external, timestampMs: event.timestampMs)
            }
            outputs.append(changelogRecord(.session(user: session.user, inputOffset: stagedInputOffset[session.user] ?? -1,
                                                    lastSeenMs: session.lastSeenMs, events: events),
                                           partition: session.partition ?? 0))
        }
        for session in expired {
            outputs.append(changelogRecord(.tombstone(user: session.user), partition: session.partition ?? 0))
        }
        let markersFrom = outputs.count
        for (tp, next) in nextOffsets {
            outputs.append(changelogRecord(.marker(nextInputOffset: next), partition: tp.partition))
        }
        metrics.changelogRecords.increment(by: outputs.count - changelogFrom)

        let deliveryStart = DispatchTime.now().uptimeNanoseconds
        producer.recordOffsets(fromToken: changelogFrom)
        if config.delivery == .exactlyOnce {
            try deliverTransaction(outputs, offsets: nextOffsets)
        } else {
            // The markers go only after everything else of the batch is acknowledged: a restore
            // that sees a marker may skip the batch's inputs, so their answers must be in already.
            try deliver(outputs, 0..<markersFrom)
            try deliver(outputs, markersFrom..<outputs.count)
        }
        let changelogEnds = changelogEnd(outputs, delivered: producer.takeDeliveredOffsets())
        let commitStart = clock.add(.delivery, since: deliveryStart)
        let deliveredAt = Self.nowMs()
        for answer in answers {
            if let ts = answer.message.timestampMs {
                metrics.endToEnd.recordMilliseconds(max(0, deliveredAt - ts))
            }
        }
        metrics.recommendationsOut.increment(by: answers.count)

        // Commit point: sessions, removals, new vocabulary ids, input and changelog offsets, atomically.
        var writes = WriteBatch()
        vocabulary.stagePending(into: &writes)
        for session in staged.values { sessions.stage(session, into: &writes) }
        for session in expired { sessions.stageRemoval(session.user, into: &writes) }
        for (tp, next) in nextOffsets {
            sessions.stageOffset(topic: tp.topic, partition: tp.partition, nextOffset: next, into: &writes)
        }
        for (p, end) in changelogEnds {
            sessions.stageOffset(topic: config.kafka.changelogTopic, partition: p, nextOffset: end, into: &writes)
        }
        try storage { try sessions.commit(writes, sessions: Array(staged.values), removed: expired.map(\.user)) }
        vocabulary.didCommitPending()
        if !expired.isEmpty { metrics.sessionsExpired.increment(by: expired.count) }

        if config.delivery == .atLeastOnce {
            commitGroupOffsets(nextOffsets, async: true)
        } else {
            for (tp, next) in nextOffsets { groupCommitted[tp] = max(groupCommitted[tp] ?? 0, next) }
        }
        _ = clock.add(.commit, since: commitStart)
    }

    /// Commits to the group, never below what the group already holds (an offset moving back
    /// would make the next owner answer those records again).
    private func commitGroupOffsets(_ offsets: [TopicPartition: Int64], async: Bool) {
        var forward: [TopicPartition: Int64] = [:]
        for (tp, next) in offsets where next > (groupCommitted[tp] ?? -1) { forward[tp] = next }
        guard !forward.isEmpty else { return }
        do {
            try consumer.commit(forward, async: async)
            for (tp, next) in forward { groupCommitted[tp] = next }
        } catch {
            metrics.consumerErrors.increment()
            logger.warning("group offset commit failed (LevelDB and the changelog hold the truth; lag metrics may lag): \(error)")
        }
    }

    private func changelogRecord(_ record: ChangelogRecord, partition: Int32) -> KafkaRecord {
        KafkaRecord(topic: config.kafka.changelogTopic, key: record.key, value: record.value, partition: partition)
    }

    /// Next changelog offset per partition after this batch's delivered changelog records.
    private func changelogEnd(_ records: [KafkaRecord], delivered: [Int: Int64]) -> [Int32: Int64] {
        var ends: [Int32: Int64] = [:]
        for (token, offset) in delivered {
            guard let p = records[token].partition else { continue }
            ends[p] = max(ends[p] ?? 0, offset + 1)
        }
        return ends
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
    /// `range`: which of `records` to send now; a record's token is its index in `records`.
    private func deliver(_ records: [KafkaRecord], _ range: Range<Int>) throws {
        guard !range.isEmpty else { return }
        for i in range {
            try kafka { try producer.send(records[i], token: i) }
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

    // MARK: exactly-once

    private func initTransactions() throws {
        while true {
            do {
                try producer.initTransactions(timeoutMs: 30_000)
                logger.info("transactions ready", metadata: ["transactional_id": "\(config.kafka.groupID).\(config.kafka.instanceID ?? "")"])
                return
            } catch {
                guard error.transactionAdvice == .retry, !stop.isStopped else {
                    throw PipelineError(code: .kafka, message: "initialising transactions: \(error.message)")
                }
                logger.warning("initialising transactions: \(error.message); retrying")
                Thread.sleep(forTimeInterval: 1)
            }
        }
    }

    /// One transaction: every record, then the input offsets; an abortable failure aborts and
    /// runs the same records again in a new transaction (the batch's answers are already
    /// computed; nothing of an aborted transaction is visible to read_committed readers).
    private func deliverTransaction(_ records: [KafkaRecord], offsets: [TopicPartition: Int64]) throws {
        guard !records.isEmpty || !offsets.isEmpty else { return }
        while true {
            let failure: KafkaError
            do {
                try runTransaction(records, offsets: offsets)
                metrics.transactionsCommitted.increment()
                _ = producer.takeDeliveryFailures()
                return
            } catch {
                failure = error
            }
            guard failure.transactionAdvice == .abort else {
                throw PipelineError(code: .kafka, message: "\(failure.message) (fenced by a newer instance with the same kafka.instance_id, or the producer failed for good)")
            }
            metrics.transactionsAborted.increment()
            logger.warning("transaction aborted, running the batch again: \(failure.message)")
            do {
                try producer.abortTransaction()
            } catch {
                throw PipelineError(code: .kafka, message: "aborting a failed transaction failed (\(error.message)); the instance stops, and its partitions are restored from the changelog")
            }
            _ = producer.takeDeliveryFailures()
            _ = producer.takeDeliveredOffsets()
            if stop.isStopped {
                throw PipelineError(code: .delivery, message: "transaction failing at shutdown (\(failure.message)); the batch is answered on restart")
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }

    private func runTransaction(_ records: [KafkaRecord], offsets: [TopicPartition: Int64]) throws(KafkaError) {
        try producer.beginTransaction()
        for (i, record) in records.enumerated() { try producer.send(record, token: i) }
        try producer.sendOffsetsToTransaction(offsets, consumer: consumer)
        try commitTransaction()
    }

    private func commitTransaction() throws(KafkaError) {
        while true {
            do {
                return try producer.commitTransaction(timeoutMs: 60_000)
            } catch {
                guard error.transactionAdvice == .retry, !stop.isStopped else { throw error }
                logger.warning("committing the transaction: \(error.message); retrying")
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
        var json = JSONBytes(capacity: 96 + 40 * items.count)
        json.raw("{\"user\":"); json.string(answer.event.user)
        json.raw(",\"items\":[")
        var first = true
        for scored in items {
            guard let external = vocabulary.external(for: scored.item) else { continue }
            json.raw(first ? "{\"item\":" : ",{\"item\":")
            first = false
            json.string(external)
            json.raw(",\"score\":"); json.number(scored.score)
            json.raw("}")
        }
        json.raw("],\"model\":{\"name\":"); json.string(model.name)
        json.raw(",\"version\":"); json.string(model.version)
        json.raw("},\"source\":{\"topic\":"); json.string(answer.message.topic)
        json.raw(",\"partition\":"); json.int(Int64(answer.message.partition))
        json.raw(",\"offset\":"); json.int(answer.message.offset)
        json.raw("}")
        if let id = answer.event.id { json.raw(",\"event_id\":"); json.string(id) }
        json.raw(",\"event_item\":"); json.string(answer.event.item)
        json.raw(",\"event_ts\":"); json.int(answer.event.timestampMs)
        json.raw(",\"produced_at\":"); json.int(producedAt)
        json.raw("}")
        return KafkaRecord(topic: config.kafka.outputTopic, key: Array(answer.event.user.utf8), value: json.bytes, headers: [
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
            metrics.consumerErrors.increment()
            if config.delivery == .exactlyOnce {
                // The committed offsets are the truth in this mode; guessing could answer twice.
                assignmentFailure = PipelineError(code: .kafka, message: "could not read the group's committed offsets (\(error)); exactly-once mode cannot start these partitions without them")
                return Dictionary(uniqueKeysWithValues: partitions.map { ($0, .end) })
            }
            logger.warning("could not read the group's committed offsets (\(error)); emitting for every replayed event")
        }
        var starts: [TopicPartition: StartOffset] = [:]
        do {
            var local: [TopicPartition: Int64?] = [:]
            var distrust: Set<Int32> = []
            for tp in partitions {
                let stored = try sessions.nextOffset(topic: tp.topic, partition: tp.partition)
                local[tp] = stored
                // Exactly-once: the transaction that committed the group's offset is the truth.
                // Local state past it (written by an at-least-once run, or a directory from
                // elsewhere; LevelDB is written only after a commit) is not trusted. A group
                // with no committed offset proves nothing.
                if config.delivery == .exactlyOnce, let stored, let c = committed[tp], stored > c {
                    logger.warning("local state of \(tp) is at \(stored) but the last committed transaction at \(c); rebuilding it from the changelog")
                    distrust.insert(tp.partition)
                }
            }
            let restored = try restorer.restore(partitions: partitions.map(\.partition), distrust: distrust)
            for tp in partitions {
                starts[tp] = start(tp, local: local[tp] ?? nil, restored: restored[tp.partition]!, committed: committed[tp])
                owned.insert(tp.partition)
            }
        } catch {
            // Unknown local state must never read as "no state": replaying from the start would
            // append every event again to sessions that already hold them. Stop loudly (the loop
            // throws right after this poll, before any record is processed).
            assignmentFailure = (error as? PipelineError)
                ?? PipelineError(code: .storage, message: "restoring \(partitions.map(\.description).joined(separator: ", ")) failed (\(error)); stopping instead of answering from unknown state")
            for tp in partitions { starts[tp] = .end }
        }
        do {
            try restorer.setStandby(owned: owned)
        } catch {
            assignmentFailure = PipelineError(code: .kafka, message: "standby: assigning the changelog partitions not owned failed: \(error)")
        }
        metrics.assignedPartitions.record(owned.count)
        return starts
    }

    /// Where an assigned partition starts, after its restore.
    private func start(_ tp: TopicPartition, local: Int64?, restored: ChangelogRestorer.Outcome, committed: Int64?) -> StartOffset {
        let resume = restored.nextInputOffset
        emitFrom[tp] = committed ?? 0
        groupCommitted[tp] = committed
        lastOffset[tp] = resume.map { $0 - 1 }
        logger.info("assigned \(tp)", metadata: [
            "local_offset": "\(local.map(String.init) ?? "none")",
            "resume_offset": "\(resume.map(String.init) ?? "none")",
            "group_committed": "\(committed.map(String.init) ?? "none")",
            "restored_records": "\(restored.records)",
        ])
        if let resume { return .offset(resume) }
        if let committed, committed > 0 {
            // Neither local state nor the changelog knows this partition, yet the group answered
            // it: a deployment from before the changelog. Rebuild by replay, answering nothing
            // below the committed offset (the one case that replays the input).
            logger.warning("\(tp): no local state and no changelog record; rebuilding sessions by replaying the input below offset \(committed)")
        }
        return .beginning
    }

    public func partitionsRevoked(_ partitions: [TopicPartition], pending: [KafkaMessage], consumer: KafkaConsumer) {
        logger.info("revoked \(partitions.map(\.description).joined(separator: ", ")) with \(pending.count) pending records")
        metrics.partitionsRevoked.increment(by: partitions.count)
        if !pending.isEmpty {
            do {
                try process(pending)
            } catch {
                // Not committed: the next owner (or we, on restart) restores what was delivered.
                logger.error("could not finish pending records of revoked partitions: \(error)")
            }
        }
        var offsets: [TopicPartition: Int64] = [:]
        for tp in partitions {
            do {
                if let next = try sessions.nextOffset(topic: tp.topic, partition: tp.partition) { offsets[tp] = next }
            } catch {
                // Not committing it to the group is safe (the next owner starts lower, never higher).
                logger.error("revoke: reading the stored offset of \(tp) failed: \(error); its group offset is left as it was")
            }
        }
        if config.delivery == .atLeastOnce { commitGroupOffsets(offsets, async: false) }
        for tp in partitions {
            emitFrom[tp] = nil
            lastOffset[tp] = nil
            groupCommitted[tp] = nil
            owned.remove(tp.partition)
            metrics.clearLag(partition: tp.partition)
        }
        metrics.assignedPartitions.record(owned.count)
    }

    private func updateLagIfDue() {
        let now = Date().timeIntervalSince1970
        guard now - lastLagUpdate >= 1 else { return }
        lastLagUpdate = now
        for tp in consumer.assignment() {
            guard let high = consumer.cachedHighWatermark(tp) else { continue }
            do {
                guard let next = try sessions.nextOffset(topic: tp.topic, partition: tp.partition) else { continue }
                metrics.setLag(partition: tp.partition, max(0, high - next))
            } catch {
                // Only the gauge goes stale here; the batch path handles storage errors itself.
                logger.warning("lag of \(tp.topic)[\(tp.partition)] not updated: \(error)")
            }
        }
    }

    public static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

/// JSON built straight into bytes for the hot path: JSONEncoder, and String(format:) for numbers,
/// cost more than the model call here (a fifth of a micro-batch in the demo's profile).
struct JSONBytes {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    /// Literal JSON punctuation and keys.
    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// A JSON string: quotes, and escapes for the quote, backslash and control characters.
    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case UInt8(ascii: "\n"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xf)]])
            default:
                // UTF-8 of any other scalar, as is (valid JSON).
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func int(_ n: Int64) { bytes.append(contentsOf: String(n).utf8) }

    /// Shortest round-trip decimal (Swift's own float printing); non-finite scores as 0, which
    /// JSON cannot spell otherwise.
    mutating func number(_ f: Float) {
        guard f.isFinite else { bytes.append(UInt8(ascii: "0")); return }
        bytes.append(contentsOf: f.description.utf8)
    }
}
