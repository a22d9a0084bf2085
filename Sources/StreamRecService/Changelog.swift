// The sessions changelog from the pipeline's side: restoring a partition that arrives here with
// local state behind the changelog, and keeping standby copies of partitions owned elsewhere
// (docs/architecture.md, "Sessions changelog" and "Standby replicas"). Record format and batch
// rules: StreamRecStorage/SessionChangelog.swift.
//
// Local bookkeeping, in the same LevelDB as the sessions and written in the same batches:
//   o/<input topic>/<p>      next input offset the local sessions of partition p reflect
//   o/<changelog topic>/<p>  next changelog offset they reflect (where a restore starts)
//
// Everything here runs on the pipeline thread (restores inside the assignment callback, standby
// polls between micro-batches), so sessions and vocabulary need no extra locking.
import Foundation
import Logging
import StreamRecKafka
import StreamRecStorage

public final class ChangelogRestorer {
    let topic: String
    let inputTopic: String
    /// Tails the standby partitions; a restore reads with a consumer of its own.
    private let consumer: KafkaConsumer
    private let readerProperties: [String: String]
    private let transactional: Bool
    private let sessions: SessionStore
    private let vocabulary: Vocabulary
    private let metrics: PipelineMetrics
    private let logger: Logger
    private let recordsPerWrite: Int
    private let standbyEnabled: Bool
    private let readTimeoutMs: Int32
    /// Partitions of the changelog (= of the input).
    let partitionCount: Int

    /// Standby partitions and their un-closed batches.
    private var standby: [Int32: ChangelogReplayer] = [:]
    private var standbyPosition: [Int32: Int64] = [:]

    struct Outcome {
        /// Where input resumes; nil when the changelog held no marker for the partition.
        var nextInputOffset: Int64?
        var records: Int
        var sessions: Int
        var bytes: Int
        var seconds: Double
    }

    init(config: StreamRecConfig, brokers: String, sessions: SessionStore, vocabulary: Vocabulary,
         metrics: PipelineMetrics, logger: Logger) throws {
        topic = config.kafka.changelogTopic
        inputTopic = config.kafka.inputTopic
        self.sessions = sessions
        self.vocabulary = vocabulary
        self.metrics = metrics
        self.logger = logger
        recordsPerWrite = config.state.restoreBatch
        standbyEnabled = config.state.standbyReplicas > 0
        readTimeoutMs = config.state.restoreTimeoutMs
        // Never joins or commits (assign() only); whole transactions only.
        readerProperties = KafkaClients.changelogReader(config, brokers: brokers, standby: false).properties
        transactional = config.delivery == .exactlyOnce
        consumer = try KafkaConsumer(properties: KafkaClients.changelogReader(config, brokers: brokers, standby: true).properties)
        guard let count = try consumer.partitionCount(topic) else {
            throw ConfigError(key: "kafka.changelog_topic", source: "serve", message: "topic '\(topic)' does not exist; create it with `streamrec topics apply --brokers ...` (topology/topics.yaml declares it: compacted, as many partitions as '\(config.kafka.inputTopic)')")
        }
        guard let inputCount = try consumer.partitionCount(config.kafka.inputTopic) else {
            throw ConfigError(key: "kafka.input_topic", source: "serve", message: "topic '\(config.kafka.inputTopic)' does not exist; create it with `streamrec topics apply`")
        }
        guard count == inputCount else {
            throw ConfigError(key: "kafka.changelog_topic", source: "serve", message: "'\(topic)' has \(count) partitions but '\(config.kafka.inputTopic)' has \(inputCount); they must be co-partitioned (equal counts): recreate the changelog with \(inputCount) partitions")
        }
        partitionCount = count
    }

    func close() { consumer.close() }

    // MARK: restore

    /// Brings these partitions' local sessions up to the changelog's end, all with one reader
    /// (its start-up, about half a second, is paid once per assignment, not per partition). Each
    /// partition reads from its local changelog offset (the start when it is in `distrust` or has
    /// none stored), in bounded write batches.
    ///
    /// A partition's end is the high watermark of this reader's own fetch responses: not a
    /// ListOffsets answer (tansu 0.6 answers those wrongly), nor a cached value of an older
    /// assignment (which can be behind).
    func restore(partitions: [Int32], distrust: Set<Int32> = []) throws -> [Int32: Outcome] {
        guard !partitions.isEmpty else { return [:] }
        let started = DispatchTime.now().uptimeNanoseconds
        // A class: updated in place per record (a struct in the dictionary would be copied
        // whole, with its pending records, on every change).
        final class Progress {
            let tp: TopicPartition
            let from: Int64
            var position: Int64
            var replayer = ChangelogReplayer()
            var writer: RestoreWriter
            var outcome: Outcome
            var done = false
            var lastProgress = Date()
            init(tp: TopicPartition, from: Int64, position: Int64, writer: RestoreWriter, outcome: Outcome) {
                self.tp = tp; self.from = from; self.position = position; self.writer = writer; self.outcome = outcome
            }
        }
        var progress: [Int32: Progress] = [:]
        var starts: [TopicPartition: StartOffset] = [:]
        for p in partitions {
            standby[p] = nil
            standbyPosition[p] = nil
            metrics.clearStandbyLag(partition: p)
            let tp = TopicPartition(topic, p)
            let stored = distrust.contains(p) ? nil : try sessions.nextOffset(topic: topic, partition: p)
            var outcome = Outcome(nextInputOffset: try sessions.nextOffset(topic: inputTopic, partition: p), records: 0, sessions: 0, bytes: 0, seconds: 0)
            if distrust.contains(p) {
                // Sessions of this partition newer than the changelog must not survive: drop them
                // all and rebuild the partition from the changelog alone.
                let users = try sessions.users(inPartition: p)
                var batch = WriteBatch()
                for user in users { sessions.stageRemoval(user, into: &batch) }
                try sessions.commit(batch, sessions: [], removed: users)
                outcome.nextInputOffset = nil
            }
            progress[p] = Progress(tp: tp, from: stored ?? 0, position: stored ?? 0,
                                   writer: RestoreWriter(sessions: sessions, vocabulary: vocabulary, partition: p, changelogTopic: topic, inputTopic: inputTopic),
                                   outcome: outcome)
            starts[tp] = stored.map { .offset($0) } ?? .beginning
        }
        metrics.restoring(partitions.count)
        var restoring = partitions.count
        defer { metrics.restoring(-restoring) }
        let reader = try KafkaConsumer(properties: readerProperties)
        defer { reader.close() }
        try reader.assign(starts)
        var lastLog = Date()
        while progress.values.contains(where: { !$0.done }) {
            let messages = try reader.poll(maxMessages: 5_000, timeoutMs: 100)
            for m in messages {
                guard let state = progress[m.partition], !state.done else { continue }
                state.outcome.records += 1
                state.outcome.bytes += (m.key?.count ?? 0) + (m.value?.count ?? 0)
                let record = try ChangelogRecord.decode(key: m.key, value: m.value, where: "\(state.tp)@\(m.offset)")
                state.position = m.offset + 1
                state.lastProgress = Date()
                if let (batch, next) = state.replayer.feed(record, offset: m.offset) {
                    try state.writer.add(batch, nextInputOffset: next, nextChangelogOffset: m.offset + 1)
                    if state.writer.count >= recordsPerWrite { state.outcome.sessions += try state.writer.flush(sync: false) }
                }
            }
            metrics.restoredRecords(messages.count)
            let arrived = Set(messages.map(\.partition))
            for (p, state) in progress where !state.done && !arrived.contains(p) {
                let idle = Date().timeIntervalSince(state.lastProgress)
                if let high = reader.cachedHighWatermark(state.tp) {
                    // Exactly-once: a transaction's commit marker takes an offset no record has,
                    // so the last records may end below the high watermark; a second without
                    // records then means the end.
                    if state.position >= high || (transactional && idle > 1) {
                        state.outcome.sessions += try state.writer.flush(sync: true)
                        if let next = state.writer.lastNextInputOffset { state.outcome.nextInputOffset = next }
                        state.outcome.seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                        state.done = true
                        restoring -= 1
                        metrics.restoring(-1)
                        logger.info("restored \(inputTopic)[\(p)]", metadata: [
                            "records": "\(state.outcome.records)", "sessions": "\(state.outcome.sessions)",
                            "seconds": "\(String(format: "%.2f", state.outcome.seconds))",
                            "next_input_offset": "\(state.outcome.nextInputOffset.map(String.init) ?? "none")",
                        ])
                        continue
                    }
                }
                // Records past the last stable offset (an open transaction) are held back until
                // it ends; transaction.timeout.ms bounds that.
                if idle * 1000 > Double(readTimeoutMs) {
                    throw PipelineError(code: .kafka, message: "restoring \(state.tp): no progress for \(readTimeoutMs) ms at offset \(state.position) (high watermark \(reader.cachedHighWatermark(state.tp).map(String.init) ?? "not fetched yet"); state.restore_timeout_ms); is the broker reachable, or a transaction stuck open?")
                }
            }
            if Date().timeIntervalSince(lastLog) >= 5 {
                lastLog = Date()
                for state in progress.values where !state.done {
                    logger.info("restoring \(state.tp)", metadata: ["from": "\(state.from)", "at": "\(state.position)",
                                                                    "high_watermark": "\(reader.cachedHighWatermark(state.tp).map(String.init) ?? "?")",
                                                                    "records": "\(state.outcome.records)"])
                }
            }
        }
        metrics.restoreSeconds(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
        return progress.mapValues(\.outcome)
    }

    // MARK: standby replicas

    /// Tails the changelog of every partition this instance does not own (when standbys are on),
    /// each from its local changelog offset.
    func setStandby(owned: Set<Int32>) throws {
        guard standbyEnabled else { return }
        let wanted = Set((0..<Int32(partitionCount)).filter { !owned.contains($0) })
        for p in Array(standby.keys) where !wanted.contains(p) {
            standby[p] = nil; standbyPosition[p] = nil; metrics.clearStandbyLag(partition: p)
        }
        var starts: [TopicPartition: StartOffset] = [:]
        for p in wanted {
            let from = try sessions.nextOffset(topic: topic, partition: p)
            starts[TopicPartition(topic, p)] = from.map { .offset($0) } ?? .beginning
            standby[p] = ChangelogReplayer()
            standbyPosition[p] = from ?? 0
        }
        try consumer.assign(starts)
        metrics.standbyPartitions(wanted.count)
    }

    /// Applies what the standby partitions' changelog has gained, up to `maxRecords`; returns the
    /// number of records read. Non-blocking.
    @discardableResult
    func pollStandby(maxRecords: Int) throws -> Int {
        guard standbyEnabled, !standby.isEmpty else { return 0 }
        let messages = try consumer.poll(maxMessages: maxRecords, timeoutMs: 0)
        guard !messages.isEmpty else { return 0 }
        var writers: [Int32: RestoreWriter] = [:]
        for m in messages {
            guard var replayer = standby[m.partition] else { continue }
            let record = try ChangelogRecord.decode(key: m.key, value: m.value, where: "\(m.topicPartition)@\(m.offset)")
            standbyPosition[m.partition] = m.offset + 1
            if let (batch, next) = replayer.feed(record, offset: m.offset) {
                var writer = writers[m.partition] ?? RestoreWriter(sessions: sessions, vocabulary: vocabulary, partition: m.partition,
                                                                    changelogTopic: topic, inputTopic: inputTopic)
                try writer.add(batch, nextInputOffset: next, nextChangelogOffset: m.offset + 1)
                writers[m.partition] = writer
            }
            standby[m.partition] = replayer
        }
        // Not synced: a lost standby write is read again from the changelog.
        for var writer in writers.values { _ = try writer.flush(sync: false) }
        metrics.restoredRecords(messages.count)
        for (p, position) in standbyPosition {
            if let high = consumer.cachedHighWatermark(TopicPartition(topic, p)) {
                metrics.setStandbyLag(partition: p, max(0, high - position))
            }
        }
        return messages.count
    }
}

/// Turns closed changelog batches into LevelDB writes: dense ids come from this instance's
/// vocabulary, and the offsets move only with whole batches. Records are staged in changelog
/// order, so where a user appears twice (a changelog not compacted yet) the later put in the same
/// LevelDB batch wins, as in the log.
struct RestoreWriter {
    let sessions: SessionStore
    let vocabulary: Vocabulary
    let partition: Int32
    let changelogTopic: String
    let inputTopic: String
    private var batch = WriteBatch()
    /// Users staged since the last write (the cache forgets them once it is written).
    private var users: [String] = []
    private var nextInput: Int64?
    private var nextChangelog: Int64?
    private(set) var lastNextInputOffset: Int64?

    init(sessions: SessionStore, vocabulary: Vocabulary, partition: Int32, changelogTopic: String, inputTopic: String) {
        self.sessions = sessions
        self.vocabulary = vocabulary
        self.partition = partition
        self.changelogTopic = changelogTopic
        self.inputTopic = inputTopic
    }

    /// Session records and tombstones staged since the last write.
    var count: Int { users.count }

    mutating func add(_ records: [ChangelogRecord], nextInputOffset: Int64, nextChangelogOffset: Int64) throws {
        for record in records {
            switch record {
            case .session(let user, _, let lastSeenMs, let events):
                let session = Session(user: user, events: events.map { SessionEvent(item: vocabulary.idOrAssign($0.item), timestampMs: $0.timestampMs) },
                                      lastSeenMs: lastSeenMs, partition: partition)
                sessions.stage(session, into: &batch)
                users.append(user)
            case .tombstone(let user):
                sessions.stageRemoval(user, into: &batch)
                users.append(user)
            case .marker:
                break
            }
        }
        nextInput = nextInputOffset
        nextChangelog = nextChangelogOffset
        lastNextInputOffset = nextInputOffset
    }

    /// Writes what is staged; returns the number of session records and tombstones written.
    mutating func flush(sync: Bool) throws -> Int {
        guard let nextChangelog else { return 0 }
        vocabulary.stagePending(into: &batch)
        sessions.stageOffset(topic: changelogTopic, partition: partition, nextOffset: nextChangelog, into: &batch)
        if let nextInput { sessions.stageOffset(topic: inputTopic, partition: partition, nextOffset: nextInput, into: &batch) }
        do {
            try sessions.store.write(batch, sync: sync)
        } catch {
            throw PipelineError(code: .storage, message: "LevelDB: writing restored sessions of partition \(partition) failed: \(error)")
        }
        // The cache holds only committed sessions, so drop what it may hold of these users. It is
        // not filled: a restore writes far more sessions than the cache keeps, and an LRU insert
        // and eviction per session was a quarter of a 300,000-session restore's profile.
        for user in users { sessions.forget(user) }
        vocabulary.didCommitPending()
        let n = users.count
        users.removeAll(keepingCapacity: true)
        batch = WriteBatch()
        self.nextChangelog = nil
        return n
    }
}
