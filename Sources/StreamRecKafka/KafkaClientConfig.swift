// A Kafka client's configuration as typed Swift values; `properties` turns it into librdkafka's
// name=value pairs in one place. StreamRecService builds every client it runs from its config in
// KafkaClients.swift; tools and benchmarks use the same type.
import Foundation

public struct KafkaClientConfig: Sendable, Equatable {
    public enum OffsetReset: String, Sendable { case earliest, latest }
    public enum Isolation: String, Sendable {
        /// Only committed transactions (exactly-once readers).
        case readCommitted = "read_committed"
        case readUncommitted = "read_uncommitted"
    }

    /// How a group divides partitions among its members.
    public enum Assignor: String, Sendable, CaseIterable {
        /// Eager: every rebalance takes every partition from every member, then hands them out.
        case range
        /// Incremental (KIP-429): only partitions that change owner are revoked; the others keep
        /// being served through the rebalance, and the assignment stays as it was where it can.
        case cooperativeSticky = "cooperative-sticky"
    }

    public var brokers: String
    public var clientID: String?
    /// Consumers: the group. Readers that only assign() still need one; give them a private one.
    public var groupID: String?
    /// Static membership (`group.instance.id`).
    public var groupInstanceID: String?
    public var assignor: Assignor?
    public var offsetReset: OffsetReset?
    public var autoCommit: Bool?
    public var isolation: Isolation?
    public var sessionTimeoutMs: Int?
    public var heartbeatIntervalMs: Int?
    public var fetchWaitMaxMs: Int?
    public var fetchMaxBytes: Int?
    public var maxPartitionFetchBytes: Int?
    /// Prefetched messages librdkafka aims to keep queued (`queued.min.messages`, default 100,000);
    /// it pauses fetching above that.
    public var queuedMinMessages: Int?
    /// Producers: acks=all with idempotence (per-partition order through retries).
    public var idempotent: Bool?
    public var lingerMs: Int?
    public var batchMessages: Int?
    public var maxInFlight: Int?
    public var transactionalID: String?
    public var transactionTimeoutMs: Int?
    /// Nagle's algorithm holds small requests back until the previous one is acknowledged;
    /// streams of small fetches and produce requests then wait up to 40 ms a round.
    public var disableNagle = false
    /// Syslog severity librdkafka logs up to (3 errors, 4 warnings, 6 info, 7 debug).
    public var logLevel = 4
    /// librdkafka properties applied last, as they are (the config file's kafka.consumer and
    /// kafka.producer maps, e.g. security settings).
    public var overrides: [String: String] = [:]

    public init(brokers: String) { self.brokers = brokers }

    /// librdkafka's properties.
    public var properties: [String: String] {
        var p: [String: String] = ["bootstrap.servers": brokers, "log_level": String(logLevel)]
        func set(_ key: String, _ value: (some CustomStringConvertible)?) { if let value { p[key] = value.description } }
        set("client.id", clientID)
        set("group.id", groupID)
        set("group.instance.id", groupInstanceID)
        set("partition.assignment.strategy", assignor?.rawValue)
        set("auto.offset.reset", offsetReset?.rawValue)
        set("enable.auto.commit", autoCommit)
        set("isolation.level", isolation?.rawValue)
        set("session.timeout.ms", sessionTimeoutMs)
        set("heartbeat.interval.ms", heartbeatIntervalMs)
        set("fetch.wait.max.ms", fetchWaitMaxMs)
        set("fetch.max.bytes", fetchMaxBytes)
        set("max.partition.fetch.bytes", maxPartitionFetchBytes)
        set("queued.min.messages", queuedMinMessages)
        if idempotent == true {
            p["acks"] = "all"
            p["enable.idempotence"] = "true"
        }
        set("linger.ms", lingerMs)
        set("batch.num.messages", batchMessages)
        set("max.in.flight.requests.per.connection", maxInFlight)
        set("transactional.id", transactionalID)
        set("transaction.timeout.ms", transactionTimeoutMs)
        if disableNagle { p["socket.nagle.disable"] = "true" }
        p.merge(overrides) { _, new in new }
        return p
    }
}

extension KafkaConsumer {
    public convenience init(_ config: KafkaClientConfig) throws(KafkaError) { try self.init(properties: config.properties) }
}

extension KafkaProducer {
    public convenience init(_ config: KafkaClientConfig) throws(KafkaError) { try self.init(properties: config.properties) }
}
