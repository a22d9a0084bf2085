// `streamrec bench --only restore`: restoring a partition's sessions from the compacted changelog
// against rebuilding them by replaying the input, for the same state, on the embedded cluster.
//
// Replay is what an instance without a changelog had to do (and what it still does for a
// deployment that predates it): read every input record, parse it, append it to its user's
// session, and commit sessions and offsets to LevelDB batch by batch, answering nothing.
// Restore reads what compaction leaves of the changelog (one record per user, and the last marker
// of each partition) through ChangelogRestorer, the code an assignment runs. The bench writes
// that compacted changelog itself from the replayed state, as the broker's log cleaner would;
// librdkafka's mock broker does not compact. Both end in a state directory, and the bench checks
// that the two hold the same sessions.
import Foundation
import Logging
import Metrics
import StreamRecKafka
import StreamRecStorage

public struct RestoreBenchmarkResult: Sendable {
    public var name: String
    public var events: Int
    public var users: Int
    public var replaySeconds: Double
    public var restoreSeconds: Double
    public var changelogRecords: Int
    public var changelogBytes: Int
    public var speedup: Double { replaySeconds / max(restoreSeconds, 1e-9) }
    public var sessionsPerSecond: Double { Double(users) / max(restoreSeconds, 1e-9) }
    public var megabytesPerSecond: Double { Double(changelogBytes) / 1e6 / max(restoreSeconds, 1e-9) }
    public var replayEventsPerSecond: Double { Double(events) / max(replaySeconds, 1e-9) }
}

public enum RestoreBenchmark {
    /// `sequences`: (user, items) in each user's order; events are interleaved round-robin across
    /// users (as `streamrec replay` loads a dataset). 24 partitions keep each of the mock broker's
    /// partition logs under its size cap.
    public static func run(name: String, sequences: [(user: String, items: [String])], maxItems: Int = 200, partitions: Int = 24,
                           logger: Logger, say: (String) -> Void) throws -> RestoreBenchmarkResult {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-restorebench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let cluster = try MockCluster(brokers: 1)
        defer { cluster.shutdown() }
        let (input, changelog) = ("interactions", "sessions.changelog")
        try cluster.createTopic(input, partitions: partitions, replication: 1)
        try cluster.createTopic(changelog, partitions: partitions, replication: 1)

        // The input: every user's events, round-robin, keyed by user (librdkafka's partitioner).
        let producer = try KafkaProducer(KafkaClients.bulkProducer(brokers: cluster.bootstrapServers, lingerMs: 50, batchMessages: 10_000))
        var events = 0
        var cursors = [Int](repeating: 0, count: sequences.count)
        var active = Array(sequences.indices)
        let t0: Int64 = 1_700_000_000_000
        while !active.isEmpty {
            var still: [Int] = []
            for u in active {
                let (user, items) = sequences[u]
                let json = "{\"user\":\"\(user)\",\"item\":\"\(items[cursors[u]])\",\"ts\":\(t0 + Int64(events))}"
                try producer.send(KafkaRecord(topic: input, key: Array(user.utf8), value: Array(json.utf8)))
                events += 1
                if events % 50_000 == 0 { producer.poll() }
                cursors[u] += 1
                if cursors[u] < items.count { still.append(u) }
            }
            active = still
        }
        guard producer.flush(timeoutMs: 300_000), producer.takeDeliveryFailures().isEmpty else {
            throw PipelineError(code: .delivery, message: "restore bench: the input was not delivered")
        }
        producer.close()
        say("\(name): \(events) events of \(sequences.count) users in \(partitions) partitions")

        // Replay.
        let replayDirectory = work.appendingPathComponent("replayed").path
        let policy = SessionPolicy(maxItems: maxItems, idleTTLMs: .max, cacheCapacity: 100_000)
        let replayStart = Date()
        try replay(brokers: cluster.bootstrapServers, input: input, partitions: partitions, events: events,
                   directory: replayDirectory, policy: policy)
        let replaySeconds = Date().timeIntervalSince(replayStart)
        say(String(format: "\(name): replay %.2f s (%.0f events/s)", replaySeconds, Double(events) / replaySeconds))

        // The compacted changelog of that state: one record per user, then each partition's marker.
        let (records, bytes, users) = try writeCompactedChangelog(from: replayDirectory, brokers: cluster.bootstrapServers,
                                                                  input: input, changelog: changelog)

        // Restore every partition into an empty state directory.
        var config = StreamRecConfig()
        config.kafka.inputTopic = input
        config.kafka.changelogTopic = changelog
        config.kafka.groupID = "restorebench"
        config.session = policy
        config.state.restoreBatch = 10_000
        let restoredDirectory = work.appendingPathComponent("restored").path
        let store = try KeyValueStore(path: restoredDirectory)
        let sessions = SessionStore(store: store, policy: policy)
        let vocabulary = try Vocabulary(store: store)
        let restorer = try ChangelogRestorer(config: config, brokers: cluster.bootstrapServers, sessions: sessions, vocabulary: vocabulary,
                                             metrics: PipelineMetrics(factory: NOOPMetricsHandler.instance), logger: logger)
        let restoreStart = Date()
        let restoredRecords = try restorer.restore(partitions: Array(0..<Int32(partitions))).values.reduce(0) { $0 + $1.records }
        let restoreSeconds = Date().timeIntervalSince(restoreStart)
        restorer.close()
        store.close()
        guard restoredRecords == records else {
            throw PipelineError(code: .storage, message: "restore bench: read \(restoredRecords) changelog records, wrote \(records)")
        }
        try compareStates(replayDirectory, restoredDirectory, policy: policy)
        say(String(format: "\(name): restore %.2f s (%.0f sessions/s, %.1f MB/s); same sessions as the replay", restoreSeconds,
                   Double(users) / restoreSeconds, Double(bytes) / 1e6 / restoreSeconds))
        return RestoreBenchmarkResult(name: name, events: events, users: users, replaySeconds: replaySeconds, restoreSeconds: restoreSeconds,
                                      changelogRecords: records, changelogBytes: bytes)
    }

    /// The rebuild-by-replay work: poll, parse, append to sessions, commit to LevelDB per batch.
    static func replay(brokers: String, input: String, partitions: Int, events: Int, directory: String, policy: SessionPolicy) throws {
        let store = try KeyValueStore(path: directory)
        defer { store.close() }
        let sessions = SessionStore(store: store, policy: policy)
        let vocabulary = try Vocabulary(store: store)
        let consumer = try KafkaConsumer(KafkaClients.outputReader(brokers: brokers, group: "restorebench-replay", fetchWaitMs: 10))
        defer { consumer.close() }
        try consumer.assign(Dictionary(uniqueKeysWithValues: (0..<Int32(partitions)).map { (TopicPartition(input, $0), StartOffset.beginning) }))
        let rules = EventRules()
        var seen = 0
        var idle = Date()
        while seen < events {
            let batch = try consumer.poll(maxMessages: 500, timeoutMs: 100)
            if batch.isEmpty {
                if Date().timeIntervalSince(idle) > 30 { throw PipelineError(code: .kafka, message: "restore bench: replay stalled at \(seen) of \(events)") }
                continue
            }
            idle = Date()
            var staged: [String: Session] = [:]
            var next: [TopicPartition: Int64] = [:]
            for m in batch {
                seen += 1
                next[m.topicPartition] = m.offset + 1
                guard case .success(let event) = EventParser.parse(key: m.key, value: m.value, rules: rules) else { continue }
                var session = try staged[event.user] ?? sessions.session(for: event.user, nowMs: event.timestampMs)
                session.append(item: vocabulary.idOrAssign(event.item), timestampMs: event.timestampMs, maxItems: policy.maxItems)
                session.partition = m.partition
                staged[event.user] = session
            }
            var writes = WriteBatch()
            vocabulary.stagePending(into: &writes)
            for s in staged.values { sessions.stage(s, into: &writes) }
            for (tp, o) in next { sessions.stageOffset(topic: tp.topic, partition: tp.partition, nextOffset: o, into: &writes) }
            try sessions.commit(writes, sessions: Array(staged.values))
            vocabulary.didCommitPending()
        }
    }

    static func writeCompactedChangelog(from directory: String, brokers: String, input: String, changelog: String) throws
        -> (records: Int, bytes: Int, users: Int) {
        let store = try KeyValueStore(path: directory)
        defer { store.close() }
        let sessions = SessionStore(store: store, policy: SessionPolicy(maxItems: .max))
        let vocabulary = try Vocabulary(store: store)
        let producer = try KafkaProducer(KafkaClients.bulkProducer(brokers: brokers, lingerMs: 50, batchMessages: 10_000))
        var records = 0, bytes = 0, users = 0
        try sessions.forEachSession { s in
            let record = ChangelogRecord.session(user: s.user, inputOffset: 0, lastSeenMs: s.lastSeenMs,
                                                 events: s.events.map { .init(item: vocabulary.external(for: $0.item) ?? "?", timestampMs: $0.timestampMs) })
            let value = record.value!
            try producer.send(KafkaRecord(topic: changelog, key: record.key, value: value, partition: s.partition ?? 0))
            records += 1; users += 1; bytes += record.key.count + value.count
        }
        for offset in try sessions.allOffsets() where offset.topic == input {
            let marker = ChangelogRecord.marker(nextInputOffset: offset.nextOffset)
            try producer.send(KafkaRecord(topic: changelog, key: marker.key, value: marker.value, partition: offset.partition))
            records += 1; bytes += marker.key.count + 9
        }
        guard producer.flush(timeoutMs: 300_000), producer.takeDeliveryFailures().isEmpty else {
            throw PipelineError(code: .delivery, message: "restore bench: the changelog was not delivered")
        }
        producer.close()
        return (records, bytes, users)
    }

    static func compareStates(_ a: String, _ b: String, policy: SessionPolicy) throws {
        func load(_ path: String) throws -> ([String: [String]], [String: Int64]) {
            let store = try KeyValueStore(path: path)
            defer { store.close() }
            let sessions = SessionStore(store: store, policy: policy)
            let vocabulary = try Vocabulary(store: store)
            var out: [String: [String]] = [:]
            try sessions.forEachSession { out[$0.user] = $0.items.map { vocabulary.external(for: $0) ?? "?" } }
            var offsets: [String: Int64] = [:]
            for o in try sessions.allOffsets() { offsets["\(o.topic)/\(o.partition)"] = o.nextOffset }
            return (out, offsets)
        }
        let (sa, oa) = try load(a)
        let (sb, ob) = try load(b)
        guard sa == sb else {
            let differing = sa.keys.filter { sa[$0] != sb[$0] }.count + sb.keys.filter { sa[$0] == nil }.count
            throw PipelineError(code: .storage, message: "restore bench: \(differing) sessions differ between replay and restore")
        }
        for (key, offset) in oa where key.hasPrefix("interactions/") {
            guard ob[key] == offset else { throw PipelineError(code: .storage, message: "restore bench: offset \(key) is \(ob[key] ?? -1) after restore, \(offset) after replay") }
        }
    }
}
