import Foundation

/// A producer with per-record delivery reports. Thread-safe (librdkafka is), but StreamRec's
/// pipeline uses each producer from one thread.
public final class KafkaProducer: @unchecked Sendable {
    private let client: RDKafkaClient
    private let lock = NSLock()
    private var failures: [(token: Int, error: KafkaError)] = []
    private var delivered = 0
    /// Offsets of delivered records whose token is at least `offsetTokensFrom`.
    private var offsets: [Int: Int64] = [:]
    private var offsetTokensFrom = Int.max

    /// `properties` are librdkafka producer properties; `bootstrap.servers` is required.
    public init(properties: [String: String]) throws(KafkaError) {
        client = try RDKafkaClient(kind: .producer, properties: properties)
        client.onDelivery = { [unowned self] token, placed, error in
            self.lock.lock()
            if let error {
                self.failures.append((token, error))
            } else {
                self.delivered += 1
                if token >= self.offsetTokensFrom, let placed { self.offsets[token] = placed.offset }
            }
            self.lock.unlock()
        }
    }

    /// Remembers the offset each record with a token >= `token` lands at (for takeDeliveredOffsets).
    public func recordOffsets(fromToken token: Int) {
        lock.lock(); offsetTokensFrom = token; lock.unlock()
    }

    /// Offsets of the delivered records recordOffsets asked for, by token, since the last call.
    public func takeDeliveredOffsets() -> [Int: Int64] {
        lock.lock()
        defer { lock.unlock() }
        let o = offsets
        offsets.removeAll(keepingCapacity: true)
        return o
    }

    // MARK: transactions (a producer with `transactional.id`)

    /// Once, before the first transaction: fences older instances with the same transactional.id
    /// and finishes or aborts their open transaction.
    public func initTransactions(timeoutMs: Int32 = 30_000) throws(KafkaError) { try client.initTransactions(timeoutMs: timeoutMs) }
    public func beginTransaction() throws(KafkaError) { try client.beginTransaction() }
    /// The consumer's next offsets become part of the transaction (committed with it, fenced by
    /// the consumer's group generation).
    public func sendOffsetsToTransaction(_ offsets: [TopicPartition: Int64], consumer: KafkaConsumer, timeoutMs: Int32 = 30_000) throws(KafkaError) {
        try client.sendOffsetsToTransaction(offsets, consumer: consumer.client, timeoutMs: timeoutMs)
    }
    /// Flushes the transaction's records and commits it.
    public func commitTransaction(timeoutMs: Int32 = 30_000) throws(KafkaError) { try client.commitTransaction(timeoutMs: timeoutMs) }
    public func abortTransaction(timeoutMs: Int32 = 30_000) throws(KafkaError) { try client.abortTransaction(timeoutMs: timeoutMs) }

    /// Enqueues a record; `token` identifies it in `takeDeliveryFailures`. Retries locally when
    /// librdkafka's queue is full, serving delivery reports meanwhile.
    public func send(_ record: KafkaRecord, token: Int = 0) throws(KafkaError) {
        while true {
            do {
                try client.produce(record, token: token)
                return
            } catch {
                // RD_KAFKA_RESP_ERR__QUEUE_FULL = -184: wait for deliveries to make room.
                guard error.brokerCode == -184 else { throw error }
                client.poll(timeoutMs: 100)
            }
        }
    }

    /// Waits until every enqueued record is delivered or failed. Returns false on timeout
    /// (records are still queued and will be retried by librdkafka).
    public func flush(timeoutMs: Int32) -> Bool {
        client.flush(timeoutMs: timeoutMs)
    }

    public var pendingCount: Int { Int(client.outQueueLength) }

    /// Records that failed for good since the last call (after librdkafka's own retries).
    public func takeDeliveryFailures() -> [(token: Int, error: KafkaError)] {
        lock.lock()
        defer { lock.unlock() }
        let f = failures
        failures.removeAll()
        return f
    }

    public var deliveredCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return delivered
    }

    public func fatalError() -> KafkaError? { client.fatalError() }

    /// Serves delivery callbacks without blocking (or up to `timeoutMs`).
    public func poll(timeoutMs: Int32 = 0) { client.poll(timeoutMs: timeoutMs) }

    public func close(flushTimeoutMs: Int32 = 10_000) {
        _ = client.flush(timeoutMs: flushTimeoutMs)
        client.destroy()
    }
}
