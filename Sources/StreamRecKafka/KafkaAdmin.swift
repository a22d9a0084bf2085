/// Topic administration through librdkafka's Admin API, plus cluster metadata.
public final class KafkaAdmin: @unchecked Sendable {
    private let client: RDKafkaClient

    public init(brokers: String, properties: [String: String] = [:]) throws(KafkaError) {
        var props = properties
        props["bootstrap.servers"] = brokers
        client = try RDKafkaClient(kind: .producer, properties: props)
    }

    public struct TopicSpec: Sendable, Equatable {
        public var name: String
        public var partitions: Int
        public var replication: Int
        public var config: [String: String]
        public init(name: String, partitions: Int, replication: Int, config: [String: String]) {
            self.name = name
            self.partitions = partitions
            self.replication = replication
            self.config = config
        }
    }

    public enum CreateResult: Sendable, Equatable {
        case created
        case alreadyExists
        case failed(String)
    }

    public func createTopics(_ specs: [TopicSpec], timeoutMs: Int32 = 15_000) throws(KafkaError) -> [String: CreateResult] {
        let raw = try client.createTopics(specs.map {
            RDKafkaClient.NewTopic(name: $0.name, partitions: $0.partitions, replication: $0.replication, config: $0.config)
        }, timeoutMs: timeoutMs)
        var out: [String: CreateResult] = [:]
        for (name, error) in raw {
            if let error {
                // 36 = TOPIC_ALREADY_EXISTS
                out[name] = error.code == 36 ? .alreadyExists : .failed(error.message)
            } else {
                out[name] = .created
            }
        }
        return out
    }

    /// Partition counts of the topics that exist.
    public func partitionCounts(_ topics: [String], timeoutMs: Int32 = 10_000) throws(KafkaError) -> [String: Int] {
        try client.partitionCounts(topics, timeoutMs: timeoutMs)
    }

    public func topicConfigs(_ topic: String, keys: [String], timeoutMs: Int32 = 10_000) throws(KafkaError) -> [String: String] {
        try client.describeTopicConfigs(topic, keys: keys, timeoutMs: timeoutMs)
    }

    public func close() { client.destroy() }
}

/// librdkafka's in-process mock Kafka cluster: real Kafka protocol on loopback ports, usable by
/// any client in or out of this process. For tests and the embedded demo only.
public final class MockCluster: @unchecked Sendable {
    private let owner: RDKafkaClient
    private let cluster: MockClusterHandle
    public let bootstrapServers: String

    public init(brokers: Int = 3) throws(KafkaError) {
        owner = try RDKafkaClient(kind: .producer, properties: ["log_level": "3"])
        cluster = try owner.newMockCluster(brokers: brokers)
        bootstrapServers = cluster.bootstrapServers
    }

    public func createTopic(_ name: String, partitions: Int, replication: Int = 1) throws(KafkaError) {
        try cluster.createTopic(name, partitions: partitions, replication: replication)
    }

    /// Takes a broker down or up, for fault tests.
    public func setBroker(_ id: Int32, up: Bool) { cluster.setBroker(id, up: up) }
    /// Fault injection: the next requests with this protocol API key (0 = Produce, 26 = EndTxn,
    /// ...) fail with these broker error codes, in order.
    public func pushRequestErrors(apiKey: Int16, errors: [Int32]) { cluster.pushRequestErrors(apiKey: apiKey, errors: errors) }

    public func shutdown() {
        cluster.destroy()
        owner.destroy()
    }
}
