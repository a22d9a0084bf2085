// The output-continuity check (`streamrec audit`): every input record gets at least one output
// record, an answer or a dead letter, and both carry the input's partition and offset in their
// headers (source-partition, source-offset). Reading the output and dead-letter topics back, a
// gap in the covered offsets of an input partition is an input nobody answered, whatever lost it:
// a broker that dropped acknowledged writes, or a bug. The service itself cannot see such a loss.
//
// An offset is due once the input partition's high watermark passed it at least `grace` ago, so
// answers still in flight are not reported. The audit starts at the input's low watermark, or at
// the first input offset at or after `sinceMs` (set it inside the output topic's retention: older
// answers are gone, and their inputs would read as missing).
import Foundation
import Logging
import Metrics
import ServiceLifecycle
import StreamRecKafka

/// Which input offsets of one partition have an output record; compact for a long stream.
struct CoverageTracker: Sendable {
    /// Every offset below this is covered (or before the audit's start).
    private(set) var contiguousEnd: Int64
    /// Covered offsets at or above contiguousEnd.
    private var ahead: Set<Int64> = []
    private(set) var duplicates = 0

    init(start: Int64) { contiguousEnd = start }

    mutating func cover(_ offset: Int64) {
        if offset < contiguousEnd || ahead.contains(offset) {
            duplicates += 1
            return
        }
        ahead.insert(offset)
        while ahead.remove(contiguousEnd) != nil { contiguousEnd += 1 }
    }

    /// Offsets in [contiguousEnd, dueEnd) with no output record.
    func missing(below dueEnd: Int64, limit: Int = 20) -> (count: Int64, examples: [Int64]) {
        guard dueEnd > contiguousEnd else { return (0, []) }
        let coveredAhead = Int64(ahead.lazy.filter { $0 < dueEnd }.count)
        var examples: [Int64] = []
        var o = contiguousEnd
        while o < dueEnd && examples.count < limit {
            if !ahead.contains(o) { examples.append(o) }
            o += 1
        }
        return (dueEnd - contiguousEnd - coveredAhead, examples)
    }

    /// Offsets judged so far: everything below min(dueEnd, contiguousEnd) plus covered ones above.
    func covered(below dueEnd: Int64, from start: Int64) -> Int64 {
        max(0, min(dueEnd, contiguousEnd) - start) + Int64(ahead.lazy.filter { $0 < dueEnd }.count)
    }
}

public struct OutputAuditReport: Sendable, Codable {
    public struct Partition: Sendable, Codable {
        public var partition: Int32
        public var auditedFrom: Int64
        public var dueEnd: Int64
        public var missing: Int64
        public var missingExamples: [Int64]
        public var duplicates: Int
    }
    public var partitions: [Partition]
    public var outputRecords: Int
    public var missing: Int64 { partitions.reduce(0) { $0 + $1.missing } }
    public var duplicates: Int { partitions.reduce(0) { $0 + $1.duplicates } }
}

public final class OutputAudit: @unchecked Sendable {
    public struct Options: Sendable {
        public var brokers: String
        public var inputTopic: String
        public var outputTopic: String
        public var dlqTopic: String
        /// Judge input records from this time on (ms since the epoch); nil: from the low watermark.
        public var sinceMs: Int64? = nil
        /// read_committed: what an exactly-once downstream sees.
        public var readCommitted = false
        /// An offset is due this long after the input's high watermark passed it.
        public var graceSeconds: Double = 30
        public init(brokers: String, inputTopic: String, outputTopic: String, dlqTopic: String) {
            self.brokers = brokers
            self.inputTopic = inputTopic
            self.outputTopic = outputTopic
            self.dlqTopic = dlqTopic
        }
    }

    let options: Options
    let logger: Logger
    public let stop = StopSignal()
    private let consumer: KafkaConsumer
    private let missingGauges: [Int32: Gauge]
    private let checked: Counter
    private let duplicatesCounter: Counter
    private var trackers: [Int32: CoverageTracker] = [:]
    private var starts: [Int32: Int64] = [:]
    /// Input high watermarks with the time they were seen, oldest first, per partition.
    private var highs: [Int32: [(at: Date, high: Int64)]] = [:]
    private var outputRecords = 0
    private var reportedChecked: Int64 = 0
    private var reportedDuplicates = 0
    let inputPartitions: Int

    public init(options: Options, factory: MetricsFactory, logger: Logger) throws {
        guard !options.brokers.isEmpty else {
            throw ConfigError(key: "kafka.brokers", source: "audit", message: "no brokers configured; pass --brokers host:port (or STREAMREC_KAFKA_BROKERS)")
        }
        self.options = options
        self.logger = logger
        consumer = try KafkaConsumer(KafkaClients.outputReader(brokers: options.brokers, group: "streamrec-audit",
                                                               isolation: options.readCommitted ? .readCommitted : .readUncommitted, fetchWaitMs: 100))
        guard let inputCount = try consumer.partitionCount(options.inputTopic) else {
            throw ConfigError(key: "kafka.input_topic", source: "audit", message: "topic '\(options.inputTopic)' does not exist")
        }
        inputPartitions = inputCount
        var starts: [TopicPartition: StartOffset] = [:]
        for topic in [options.outputTopic, options.dlqTopic] {
            guard let n = try consumer.partitionCount(topic) else {
                throw ConfigError(key: topic == options.outputTopic ? "kafka.output_topic" : "kafka.dlq_topic", source: "audit", message: "topic '\(topic)' does not exist")
            }
            for p in 0..<Int32(n) { starts[TopicPartition(topic, p)] = .beginning }
        }
        try consumer.assign(starts)
        missingGauges = Dictionary(uniqueKeysWithValues: (0..<Int32(inputCount)).map {
            ($0, Gauge(label: MetricNames.outputMissing, dimensions: [("partition", String($0))], factory: factory))
        })
        checked = Counter(label: MetricNames.auditChecked, factory: factory)
        duplicatesCounter = Counter(label: MetricNames.auditDuplicates, factory: factory)
        for p in 0..<Int32(inputCount) {
            let tp = TopicPartition(options.inputTopic, p)
            let (low, high) = try consumer.queryWatermarks(tp)
            if let since = options.sinceMs {
                let at = try consumer.offsetsForTimes([tp: since])[tp] ?? -1
                self.starts[p] = at >= 0 ? max(low, at) : high
            } else {
                self.starts[p] = low
            }
        }
    }

    /// Reads until stopped, updating the metrics every few seconds.
    public func run() throws {
        var lastReport = Date.distantPast
        while !stop.isStopped {
            try readAvailable(timeoutMs: 500)
            if Date().timeIntervalSince(lastReport) >= 5 {
                lastReport = Date()
                let report = try check(now: Date())
                if report.missing > 0 {
                    logger.error("inputs without any answer", metadata: ["missing": "\(report.missing)",
                                 "examples": "\(report.partitions.filter { $0.missing > 0 }.map { "\($0.partition)@\($0.missingExamples.prefix(5))" })"])
                }
            }
        }
        consumer.close()
    }

    /// Reads the output and dead-letter topics to their current end, then judges every offset
    /// below the input's current high watermark (no grace): for a stream that has stopped.
    public func runOnce(timeoutSeconds: Double = 120) throws -> OutputAuditReport {
        var ends: [TopicPartition: Int64] = [:]
        for tp in consumer.assignment() { ends[tp] = try consumer.queryWatermarks(tp).high }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var positions: [TopicPartition: Int64] = [:]
        var lastRecord = Date()
        while ends.contains(where: { (positions[$0.key] ?? 0) < $0.value }) {
            guard Date() < deadline else {
                throw PipelineError(code: .kafka, message: "audit: could not read the output topics to their end in \(Int(timeoutSeconds)) s")
            }
            let messages = try consumer.poll(maxMessages: 10_000, timeoutMs: 200)
            for m in messages {
                positions[m.topicPartition] = m.offset + 1
                cover(m)
            }
            if !messages.isEmpty { lastRecord = Date(); continue }
            // read_committed: a transaction's commit marker takes an offset no record has, so a
            // partition can end one below the high watermark; a second without records ends it.
            if options.readCommitted && Date().timeIntervalSince(lastRecord) > 1 {
                for tp in ends.keys where (positions[tp] ?? 0) < ends[tp]! {
                    if let high = consumer.cachedHighWatermark(tp), (positions[tp] ?? 0) >= high - 1 { positions[tp] = ends[tp] }
                }
            }
        }
        let report = try check(now: Date.distantFuture)
        consumer.close()
        return report
    }

    private func readAvailable(timeoutMs: Int32) throws {
        for m in try consumer.poll(maxMessages: 10_000, timeoutMs: timeoutMs) { cover(m) }
    }

    private func cover(_ m: KafkaMessage) {
        guard let p = m.header("source-partition").flatMap({ Int32(String(decoding: $0, as: UTF8.self)) }),
              let o = m.header("source-offset").flatMap({ Int64(String(decoding: $0, as: UTF8.self)) }) else { return }
        outputRecords += 1
        let start = starts[p] ?? 0
        guard o >= start else { return }
        if trackers[p] == nil { trackers[p] = CoverageTracker(start: start) }
        trackers[p]!.cover(o)
    }

    /// Judges every partition at `now` (Date.distantFuture: everything below the high watermark is due).
    func check(now: Date) throws -> OutputAuditReport {
        var partitions: [OutputAuditReport.Partition] = []
        var checkedNow: Int64 = 0
        for p in 0..<Int32(inputPartitions) {
            let high = try consumer.queryWatermarks(TopicPartition(options.inputTopic, p)).high
            highs[p, default: []].append((now == .distantFuture ? Date() : now, high))
            let due: Int64
            if now == .distantFuture {
                due = high
            } else {
                let cutoff = now.addingTimeInterval(-options.graceSeconds)
                due = highs[p]!.last(where: { $0.at <= cutoff })?.high ?? 0
                highs[p]!.removeAll { $0.at < cutoff.addingTimeInterval(-options.graceSeconds) }
            }
            let start = starts[p] ?? 0
            let tracker = trackers[p] ?? CoverageTracker(start: start)
            let (missing, examples) = tracker.missing(below: due)
            missingGauges[p]?.record(missing)
            checkedNow += tracker.covered(below: due, from: start)
            partitions.append(.init(partition: p, auditedFrom: start, dueEnd: due, missing: missing,
                                    missingExamples: examples, duplicates: tracker.duplicates))
        }
        if checkedNow > reportedChecked { checked.increment(by: Int(checkedNow - reportedChecked)); reportedChecked = checkedNow }
        let dups = partitions.reduce(0) { $0 + $1.duplicates }
        if dups > reportedDuplicates { duplicatesCounter.increment(by: dups - reportedDuplicates); reportedDuplicates = dups }
        return OutputAuditReport(partitions: partitions, outputRecords: outputRecords)
    }
}

/// `streamrec audit` as a long-running Service (its /metrics feed the continuity alert).
public final class OutputAuditService: Service, @unchecked Sendable {
    let audit: OutputAudit
    public init(audit: OutputAudit) { self.audit = audit }
    public func run() async throws {
        let audit = self.audit
        try await runUntilStopped(thread: "streamrec-audit", stop: audit.stop) { try audit.run() }
    }
}
