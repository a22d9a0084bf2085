import Foundation

/// A producer with per-record delivery reports. Thread-safe (librdkafka is), but StreamRec's
/// pipeline uses each producer from one thread.
public final class KafkaProducer: @unchecked Sendable {
    private let client: RDKafkaClient
    private let lock = NSLock()
    private var failures: [(token: Int, error: KafkaError)] = []
    private var delivered = 0

    /// `properties` are librdkafka producer properties; `bootstrap.servers` is required.
    public init(properties: [String: String]) throws(KafkaError) {
        client = try RDKafkaClient(kind: .producer, properties: properties)
        client.onDelivery = { [unowned self] token, error in
            self.lock.lock()
            if let error { self.failures.append((token, error)) } else { self.delivered += 1 }
            self.lock.unlock()
        }
    }

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
