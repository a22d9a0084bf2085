// A consumer-group member with manual offsets. Not thread-safe by design: one dedicated thread
// owns it (librdkafka's poll calls block, so they never run on Swift's cooperative pool).
import Foundation

public final class KafkaConsumer: @unchecked Sendable {
    let client: RDKafkaClient
    public weak var listener: PartitionAssignmentListener?
    /// Non-fatal errors seen while polling (all brokers down, transport errors, unknown topics);
    /// fatal ones throw. By default written to standard error, as librdkafka would log them.
    public var onError: ((KafkaError) -> Void)? = { error in
        FileHandle.standardError.write(Data("kafka consumer: \(error.message)\n".utf8))
    }
    /// Messages fetched in the current poll call, visible to a rebalance that happens mid-poll.
    private var inFlight: [KafkaMessage] = []

    /// `properties` are librdkafka consumer properties; `group.id` and `bootstrap.servers` are required.
    /// Offsets are managed by the caller: auto-commit and auto offset store are forced off.
    public init(properties: [String: String]) throws(KafkaError) {
        var props = properties
        props["enable.auto.commit"] = "false"
        props["enable.auto.offset.store"] = "false"
        props["enable.partition.eof"] = "false"
        // Without an assignor given: eager ones (a revoke hands back every partition, and the
        // listener drains first). StreamRec's serving consumer sets kafka.assignor.
        props["partition.assignment.strategy"] = props["partition.assignment.strategy"] ?? "range,roundrobin"
        client = try RDKafkaClient(kind: .consumer, properties: props)
        client.onRebalance = { [unowned self] event in self.rebalance(event) }
    }

    private func rebalance(_ event: RDKafkaClient.RebalanceEvent) -> [TopicPartition: StartOffset] {
        switch event {
        case .assign(let tps):
            return listener?.partitionsAssigned(tps, consumer: self) ?? [:]
        case .revoke(let tps):
            let revoked = Set(tps)
            let pending = inFlight.filter { revoked.contains($0.topicPartition) }
            inFlight.removeAll { revoked.contains($0.topicPartition) }
            listener?.partitionsRevoked(tps, pending: pending, consumer: self)
            return [:]
        }
    }

    public func subscribe(_ topics: [String]) throws(KafkaError) {
        try client.subscribe(topics)
    }

    /// Up to `maxMessages`, waiting at most `timeoutMs` for the first one; the rest only if already
    /// fetched. Order within each partition is kept.
    public func poll(maxMessages: Int, timeoutMs: Int32) throws(KafkaError) -> [KafkaMessage] {
        inFlight.removeAll(keepingCapacity: true)
        var wait = timeoutMs
        while inFlight.count < maxMessages {
            guard let polled = client.consumerPoll(timeoutMs: wait) else { break }
            switch polled {
            case .message(let m):
                inFlight.append(m)
                wait = 0
            case .error(let e, let fatal):
                if fatal { throw e }
                onError?(e)
                if inFlight.isEmpty { return [] }
            }
        }
        let batch = inFlight
        inFlight.removeAll(keepingCapacity: true)
        return batch
    }

    public func committedOffsets(_ partitions: [TopicPartition], timeoutMs: Int32 = 10_000) throws(KafkaError) -> [TopicPartition: Int64] {
        try client.committed(partitions, timeoutMs: timeoutMs)
    }

    /// Commits "next offset to read" per partition to the group (for lag monitoring and for other
    /// instances' output watermark; StreamRec's own truth is in LevelDB).
    public func commit(_ offsets: [TopicPartition: Int64], async: Bool = true) throws(KafkaError) {
        try client.commit(offsets, async: async)
    }

    /// High watermark from the latest fetch response (no network round trip).
    public func cachedHighWatermark(_ tp: TopicPartition) -> Int64? {
        client.cachedWatermarks(tp)?.high
    }

    public func assignment() -> [TopicPartition] { client.assignment() }

    /// Reads these partitions without joining a group (no rebalances, no commits needed): for
    /// side channels every instance reads whole, like the model-updates topic.
    public func assign(_ starts: [TopicPartition: StartOffset]) throws(KafkaError) {
        try client.assign(starts)
    }

    /// Partition count of a topic from the cluster's metadata; nil if the topic does not exist.
    public func partitionCount(_ topic: String, timeoutMs: Int32 = 10_000) throws(KafkaError) -> Int? {
        try client.partitionCounts([topic], timeoutMs: timeoutMs)[topic]
    }

    /// (low, high) watermarks asked of the partition leader (a network round trip).
    public func queryWatermarks(_ tp: TopicPartition, timeoutMs: Int32 = 10_000) throws(KafkaError) -> (low: Int64, high: Int64) {
        try client.queryWatermarks(tp, timeoutMs: timeoutMs)
    }

    /// The earliest offset of each partition whose record timestamp is >= the time (ms since the
    /// epoch); -1 for a partition with no record that late. A broker round trip.
    public func offsetsForTimes(_ times: [TopicPartition: Int64], timeoutMs: Int32 = 10_000) throws(KafkaError) -> [TopicPartition: Int64] {
        try client.offsetsForTimes(times, timeoutMs: timeoutMs)
    }

    /// Leaves the group; the revoke callback runs (on this thread) before it returns.
    public func close() {
        client.consumerClose()
        client.destroy()
    }
}
