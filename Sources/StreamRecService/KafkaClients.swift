// The librdkafka settings of StreamRec's serving clients, built in one place from the typed
// config (kafka.consumer / kafka.producer maps in the config file override them last).
import StreamRecKafka

enum KafkaClients {
    /// The serving consumer (group member).
    static func consumer(_ config: StreamRecConfig, brokers: String) -> [String: String] {
        var p: [String: String] = [
            "bootstrap.servers": brokers,
            "group.id": config.kafka.groupID,
            "client.id": config.kafka.clientID,
            "auto.offset.reset": "earliest",
            // A crashed instance's partitions move after this long; the default 45 s is slow for a stream.
            "session.timeout.ms": "10000",
            "heartbeat.interval.ms": "2000",
            "fetch.wait.max.ms": "50",
            // Nagle's algorithm holds small requests back until the previous one is acknowledged,
            // and the peer delays that acknowledgement up to 40 ms: a stream of small fetches and
            // produce requests then waits 40 ms a round (the demo's p50 was 40-48 ms in most runs).
            "socket.nagle.disable": "true",
            "log_level": "4",
        ]
        if let instance = config.kafka.instanceID, config.kafka.staticMembership {
            // Static membership: a restart within session.timeout.ms keeps its partitions (no
            // rebalance), and assignors order members by this name, so a restarted instance gets
            // the same partitions back after a rebalance too.
            p["group.instance.id"] = instance
        }
        if config.delivery == .exactlyOnce { p["isolation.level"] = "read_committed" }
        p.merge(config.kafka.consumerProperties) { _, new in new }
        return p
    }

    /// The serving producer; transactional in exactly-once mode.
    static func producer(_ config: StreamRecConfig, brokers: String) -> [String: String] {
        var p: [String: String] = [
            "bootstrap.servers": brokers,
            "client.id": config.kafka.clientID,
            "acks": "all",
            // Idempotence keeps per-partition order through retries (output order per user).
            "enable.idempotence": "true",
            "linger.ms": "1",
            // One request in flight per broker: a micro-batch is sent whole and then awaited, so a
            // broker gets one produce request per batch anyway. With several in flight,
            // librdkafka 2.0.2 against its mock brokers stalls 40 ms a batch in most runs
            // (responses held back by Nagle on the broker side): demo p50 40-48 ms, 13 ms with one.
            "max.in.flight.requests.per.connection": "1",
            "socket.nagle.disable": "true",   // see consumerProperties
            "log_level": "4",
        ]
        if config.delivery == .exactlyOnce, let instance = config.kafka.instanceID {
            // One transactional.id per instance: init_transactions fences a zombie of the same
            // instance; the consumer group generation sent with the offsets fences the others.
            p["transactional.id"] = "\(config.kafka.groupID).\(instance)"
            p["transaction.timeout.ms"] = String(config.kafka.transactionTimeoutMs)
        }
        p.merge(config.kafka.producerProperties) { _, new in new }
        return p
    }
}
