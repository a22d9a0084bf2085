// topology/topics.yaml: the topics StreamRec uses and the consumer group, declared once.
// `streamrec topics apply` creates what is missing and reports what differs.
import Foundation
import StreamRecKafka
import Yams

public struct Topology: Sendable, Equatable {
    public struct Topic: Sendable, Equatable {
        public var name: String
        public var role: String?
        public var partitions: Int
        public var replication: Int
        public var config: [String: String]
    }
    public var consumerGroup: String
    public var topics: [Topic]

    public static func load(path: String) throws(ConfigError) -> Topology {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError(key: "--topology", source: path, message: "cannot read the topology file; pass --topology topology/topics.yaml")
        }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String) throws(ConfigError) -> Topology {
        let root: [String: Any]
        do {
            guard let r = try Yams.load(yaml: text) as? [String: Any] else {
                throw ConfigError(key: "(root)", source: source, message: "must be a mapping with 'topics:' and 'consumer_group:'")
            }
            root = r
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError(key: "(file)", source: source, message: "not valid YAML: \(error)")
        }
        guard let list = root["topics"] as? [[String: Any]], !list.isEmpty else {
            throw ConfigError(key: "topics", source: source, message: "must be a non-empty list of {name, partitions, replication, config}")
        }
        var topics: [Topic] = []
        for (i, entry) in list.enumerated() {
            guard let name = entry["name"] as? String, !name.isEmpty else {
                throw ConfigError(key: "topics[\(i)].name", source: source, message: "every topic needs a name")
            }
            guard let partitions = entry["partitions"] as? Int, partitions > 0 else {
                throw ConfigError(key: "topics[\(i)].partitions", source: source, message: "topic '\(name)' needs a positive integer partition count")
            }
            let replication = entry["replication"] as? Int ?? 1
            guard replication > 0 else {
                throw ConfigError(key: "topics[\(i)].replication", source: source, message: "topic '\(name)' needs a positive replication factor")
            }
            var config: [String: String] = [:]
            if let c = entry["config"] {
                guard let map = c as? [String: Any] else {
                    throw ConfigError(key: "topics[\(i)].config", source: source, message: "must be a mapping of topic configs, e.g. {cleanup.policy: compact}")
                }
                config = map.mapValues { "\($0)" }
            }
            topics.append(Topic(name: name, role: entry["role"] as? String, partitions: partitions, replication: replication, config: config))
        }
        let group = root["consumer_group"] as? String ?? "streamrec"
        return Topology(consumerGroup: group, topics: topics)
    }

    public func topic(role: String) -> Topic? { topics.first { $0.role == role } }

    /// Creates missing topics; reports every difference it cannot fix (partition counts, configs).
    /// `replicationCap` lowers replication for small clusters (a one-broker dev setup).
    public func apply(admin: KafkaAdmin, replicationCap: Int? = nil) throws(KafkaError) -> [String] {
        var report: [String] = []
        let existing = try admin.partitionCounts(topics.map(\.name))
        let missing = topics.filter { existing[$0.name] == nil }
        if !missing.isEmpty {
            let specs = missing.map {
                KafkaAdmin.TopicSpec(name: $0.name, partitions: $0.partitions,
                                     replication: min($0.replication, replicationCap ?? $0.replication), config: $0.config)
            }
            let results = try admin.createTopics(specs)
            for spec in specs {
                switch results[spec.name] {
                case .created?: report.append("created \(spec.name) (partitions \(spec.partitions), replication \(spec.replication))")
                case .alreadyExists?: report.append("exists  \(spec.name) (created concurrently)")
                case .failed(let why)?: report.append("FAILED  \(spec.name): \(why)")
                case nil: report.append("FAILED  \(spec.name): no result from the broker")
                }
            }
        }
        for topic in topics where existing[topic.name] != nil {
            let have = existing[topic.name]!
            let before = report.count
            if have != topic.partitions {
                report.append("differs \(topic.name): partitions \(have) on the cluster, \(topic.partitions) declared (not changed: repartitioning moves users between instances)")
            }
            if !topic.config.isEmpty {
                // A broker that cannot say is an error: an empty answer would read as "no differences".
                let current = try admin.topicConfigs(topic.name, keys: Array(topic.config.keys))
                for (key, want) in topic.config.sorted(by: { $0.key < $1.key }) {
                    if let got = current[key], got != want {
                        report.append("differs \(topic.name): \(key) is \(got) on the cluster, \(want) declared")
                    }
                }
            }
            if report.count == before { report.append("ok      \(topic.name)") }
        }
        return report
    }
}
