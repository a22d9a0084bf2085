// The training set of `streamrec retrain`: the input topic read with a separate consumer (assigned
// partitions, explicit start offsets, up to the high watermarks seen at start; it never joins or
// commits for the serving group), parsed with the service's own EventParser, optionally merged
// with a base dataset file, deduplicated and ordered per user by event time.
import Foundation
import Logging
import StreamRecKafka
import StreamRecModels

public struct RetrainError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public enum Code: String, Sendable {
        /// A setting is missing or unusable (the message names the key).
        case config
        /// The brokers could not be read in time.
        case kafka
        /// Too little or unusable training data.
        case data
        /// Training, evaluation or the snapshot write failed.
        case training
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "retrain \(code.rawValue): \(message)" }
    public var errorDescription: String? { description }
}

/// One interaction as the builder sees it. `timestampMs` is nil for base-file events without
/// times (the shared-data sequences format): they come before the user's timed events, in file order.
public struct RetrainEvent: Sendable, Equatable {
    public var user: String
    public var item: String
    public var timestampMs: Int64?
    public var id: String?

    public init(user: String, item: String, timestampMs: Int64?, id: String? = nil) {
        self.user = user
        self.item = item
        self.timestampMs = timestampMs
        self.id = id
    }
}

public struct RetrainDataset: Sendable {
    public struct Stats: Sendable, Equatable {
        /// Records read from the topic (valid or not).
        public var topicRecords = 0
        /// Records the event parser accepted.
        public var topicValid = 0
        /// Records the event parser refused, by rejection code (skipped).
        public var invalid: [String: Int] = [:]
        /// Valid topic events older than the window (event time), skipped.
        public var outsideWindow = 0
        /// Events from the base dataset.
        public var baseEvents = 0
        /// Events dropped as repeats (same id, or same user, item and time without an id).
        public var duplicates = 0
        /// Events kept.
        public var interactions = 0
        public var users = 0
        public var items = 0
        /// Event time range of the kept timed events (ms).
        public var firstEventMs: Int64?
        public var lastEventMs: Int64?
        /// Per partition: the offsets read, [start, end).
        public var offsets: [Int32: (start: Int64, end: Int64)] = [:]

        public var invalidTotal: Int { invalid.values.reduce(0, +) }

        public static func == (a: Stats, b: Stats) -> Bool {
            a.topicRecords == b.topicRecords && a.topicValid == b.topicValid && a.invalid == b.invalid && a.outsideWindow == b.outsideWindow
                && a.baseEvents == b.baseEvents && a.duplicates == b.duplicates && a.interactions == b.interactions
        }
    }

    /// One sequence per user (first appearance order), items ordered by event time.
    public var dataset: SequenceDataset
    public var stats: Stats
    /// What the data covers, for the registry manifest ("topic interactions ts A..B + base FILE").
    public var window: String
}

public enum RetrainDatasetBuilder {
    /// Reads the topic (and the base file) as `config.retrain` says. `now` anchors the window.
    /// `progress(read, total)` reports records read against the records to read.
    public static func build(config: StreamRecConfig, now: Date = Date(), logger: Logger,
                             progress: ((Int, Int) -> Void)? = nil) throws -> RetrainDataset {
        let windowStartMs: Int64? = config.retrain.windowHours > 0
            ? Int64(now.timeIntervalSince1970 * 1000) - Int64(config.retrain.windowHours * 3_600_000) : nil
        var stats = RetrainDataset.Stats()
        let topicEvents = try readTopic(config: config, windowStartMs: windowStartMs, stats: &stats, logger: logger, progress: progress)
        var base: [RetrainEvent] = []
        if let path = config.retrain.baseData {
            base = try loadBase(path: path)
            logger.info("base dataset", metadata: ["path": "\(path)", "events": "\(base.count)"])
        }
        var window = "\(config.kafka.inputTopic) " + (windowStartMs.map { "from \(iso($0)) (\(config.retrain.windowHours) h)" } ?? "from the earliest retained offset")
        window += " to \(iso(Int64(now.timeIntervalSince1970 * 1000)))"
        if let path = config.retrain.baseData { window += " + base \(path)" }
        let dataset = assemble(topic: topicEvents, base: base, windowStartMs: windowStartMs, source: window, stats: &stats)
        return RetrainDataset(dataset: dataset, stats: stats, window: window)
    }

    /// Merges, filters, deduplicates and orders. Base events come first in arrival order, so on
    /// equal times a base event precedes a topic event; the window applies to topic events only
    /// (the base file is included whole: it was configured on purpose).
    public static func assemble(topic: [RetrainEvent], base: [RetrainEvent], windowStartMs: Int64?, source: String,
                                stats: inout RetrainDataset.Stats) -> SequenceDataset {
        stats.baseEvents = base.count
        var seen = Set<String>()
        var userIndex: [String: Int] = [:]
        var users: [String] = []
        var rows: [[(ts: Int64?, order: Int, item: String)]] = []
        var order = 0
        func add(_ e: RetrainEvent, isTopic: Bool) {
            if isTopic, let start = windowStartMs, let ts = e.timestampMs, ts < start {
                stats.outsideWindow += 1
                return
            }
            // Events without an id are the same event when user, item and time agree; untimed base
            // events have no identity beyond their position and are never merged.
            let key: String? = e.id.map { "id\u{1}\($0)" } ?? e.timestampMs.map { "uit\u{1}\(e.user)\u{1}\(e.item)\u{1}\($0)" }
            if let key, !seen.insert(key).inserted {
                stats.duplicates += 1
                return
            }
            let index: Int
            if let known = userIndex[e.user] {
                index = known
            } else {
                index = users.count
                userIndex[e.user] = index
                users.append(e.user)
                rows.append([])
            }
            rows[index].append((e.timestampMs, order, e.item))
            order += 1
            if let ts = e.timestampMs {
                stats.firstEventMs = min(stats.firstEventMs ?? ts, ts)
                stats.lastEventMs = max(stats.lastEventMs ?? ts, ts)
            }
        }
        for e in base { add(e, isTopic: false) }
        for e in topic { add(e, isTopic: true) }
        let sequences = zip(users, rows).map { user, list in
            (user: user, items: list.sorted { a, b in
                (a.ts ?? Int64.min, a.order) < (b.ts ?? Int64.min, b.order)
            }.map(\.item))
        }
        stats.interactions = order
        stats.users = users.count
        stats.items = Set(sequences.flatMap(\.items)).count
        return SequenceDataset(sequences: sequences, source: source)
    }

    /// A base dataset as events: CSV times are taken as ms since the epoch, ratings.dat times as
    /// seconds (MovieLens), the sequences format has none.
    public static func loadBase(path: String) throws -> [RetrainEvent] {
        let data: SequenceDataset
        do {
            data = try SequenceDataset.load(path: path)
        } catch {
            throw RetrainError(.config, "retrain.base_data: \(error); point it at a directory with sequences.txt, a ratings.dat or a user,item,ts .csv, or remove the key")
        }
        let scale: Int64 = path.lowercased().hasSuffix(".dat") || data.source.lowercased().hasSuffix(".dat") ? 1000 : 1
        var events: [RetrainEvent] = []
        for (u, sequence) in data.sequences.enumerated() {
            for (i, item) in sequence.items.enumerated() {
                events.append(RetrainEvent(user: sequence.user, item: item, timestampMs: data.timestamps.map { $0[u][i] * scale }))
            }
        }
        return events
    }

    /// The topic from the window start (offsetsForTimes; the earliest retained offset without a
    /// window, or when the broker cannot answer) up to the high watermarks at start.
    static func readTopic(config: StreamRecConfig, windowStartMs: Int64?, stats: inout RetrainDataset.Stats, logger: Logger,
                          progress: ((Int, Int) -> Void)?) throws -> [RetrainEvent] {
        guard let brokers = config.kafka.brokers, !brokers.isEmpty else {
            throw RetrainError(.config, "kafka.brokers is not set: retrain reads the input topic; set it in the config file, as STREAMREC_KAFKA_BROKERS, or with --brokers")
        }
        let topic = config.kafka.inputTopic
        // assign() only: never joins, never commits; a private group id keeps the serving group
        // (kafka.group_id) untouched even if a setting said otherwise.
        let consumer: KafkaConsumer
        do { consumer = try KafkaConsumer(KafkaClients.retrainReader(config, brokers: brokers)) } catch {
            throw RetrainError(.kafka, "cannot create the retrain consumer: \(error); check kafka.brokers and kafka.consumer")
        }
        defer { consumer.close() }
        let partitions: Int
        do {
            guard let n = try consumer.partitionCount(topic, timeoutMs: 10_000), n > 0 else {
                throw RetrainError(.config, "topic '\(topic)' does not exist on \(brokers); check kafka.input_topic")
            }
            partitions = n
        } catch let error as RetrainError { throw error } catch {
            throw RetrainError(.kafka, "cannot read the metadata of '\(topic)' from \(brokers): \(error); check kafka.brokers and that the brokers are up")
        }
        var ends: [TopicPartition: Int64] = [:]
        var starts: [TopicPartition: Int64] = [:]
        var seek: [TopicPartition: Int64] = [:]
        if let windowStartMs {
            let all = (0..<Int32(partitions)).map { TopicPartition(topic, $0) }
            do {
                seek = try consumer.offsetsForTimes(Dictionary(uniqueKeysWithValues: all.map { ($0, windowStartMs) }))
            } catch {
                // Still correct: every event is filtered by its time below; only slower.
                logger.warning("offsetsForTimes unavailable (\(error)); reading \(topic) from the earliest retained offsets and filtering by event time")
            }
        }
        for partition in 0..<Int32(partitions) {
            let tp = TopicPartition(topic, partition)
            let (low, high): (Int64, Int64)
            do { (low, high) = try consumer.queryWatermarks(tp, timeoutMs: 10_000) } catch {
                throw RetrainError(.kafka, "cannot read the watermarks of \(tp): \(error); check the brokers are up")
            }
            var start = low
            // -1 is ambiguous (no record that late, or a broker such as librdkafka's mock that
            // cannot look times up): read the partition whole then; the time filter below decides.
            if let found = seek[tp], found >= 0 { start = max(low, min(found, high)) }
            stats.offsets[partition] = (start, high)
            if start < high {
                starts[tp] = start
                ends[tp] = high
            }
        }
        let total = ends.reduce(0) { $0 + Int($1.value - starts[$1.key]!) }
        logger.info("reading the input topic", metadata: ["topic": "\(topic)", "partitions": "\(partitions)", "records": "\(total)"])
        progress?(0, total)
        guard total > 0 else { return [] }
        do { try consumer.assign(starts.mapValues { .offset($0) }) } catch {
            throw RetrainError(.kafka, "cannot assign \(topic): \(error)")
        }
        // The input topic is not compacted and not transactional, so every offset below the high
        // watermark holds a record and the last one marks the end of a partition.
        // Per partition, events in offset order; partitions concatenated (order across users is
        // irrelevant: the builder orders each user's events by time).
        var perPartition: [Int32: [RetrainEvent]] = [:]
        var remaining = ends
        var read = 0
        let deadline = Date().addingTimeInterval(Double(config.retrain.readTimeoutMs) / 1000)
        var lastProgress = Date()
        while !remaining.isEmpty {
            guard Date() < deadline else {
                let left = remaining.keys.sorted().map(\.description).joined(separator: ", ")
                throw RetrainError(.kafka, "read \(read) of \(total) records of \(topic) in \(config.retrain.readTimeoutMs) ms; still reading \(left). Check the brokers, or raise retrain.read_timeout_ms")
            }
            let messages: [KafkaMessage]
            do { messages = try consumer.poll(maxMessages: 1000, timeoutMs: 200) } catch {
                throw RetrainError(.kafka, "reading \(topic): \(error)")
            }
            for m in messages {
                let tp = m.topicPartition
                guard let end = remaining[tp], m.offset < end else { continue }   // written after the start
                read += 1
                stats.topicRecords += 1
                switch EventParser.parse(key: m.key, value: m.value, rules: config.events) {
                case .success(let e):
                    stats.topicValid += 1
                    perPartition[m.partition, default: []].append(RetrainEvent(user: e.user, item: e.item, timestampMs: e.timestampMs, id: e.id))
                case .failure(let rejection):
                    stats.invalid[rejection.code.rawValue, default: 0] += 1
                }
                if m.offset + 1 >= end { remaining[tp] = nil }
            }
            if Date().timeIntervalSince(lastProgress) > 0.25 || remaining.isEmpty {
                lastProgress = Date()
                progress?(read, total)
            }
        }
        if stats.invalidTotal > 0 {
            logger.warning("invalid events skipped", metadata: ["count": "\(stats.invalidTotal)", "by_code": "\(stats.invalid.sorted { $0.key < $1.key })"])
        }
        return perPartition.keys.sorted().flatMap { perPartition[$0]! }
    }

    static func iso(_ ms: Int64) -> String {
        ModelRegistry.timeFormatter().string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}
