import Foundation
import Logging
import Testing
import StreamRecKafka
@testable import StreamRecService

/// Every Kafka client is configured in one place from the typed config, and librdkafka's own
/// log lines reach swift-log.
@Suite(.serialized) struct KafkaClientsTests {
    @Test func theServingClientsFollowTheConfig() {
        var config = StreamRecConfig()
        config.kafka.groupID = "g"
        config.kafka.instanceID = "host-1"
        config.kafka.consumerProperties = ["security.protocol": "SSL", "group.id": "hijack"]
        let consumer = KafkaClients.consumer(config, brokers: "b:9092").properties
        #expect(consumer["bootstrap.servers"] == "b:9092" && consumer["group.instance.id"] == "host-1")
        #expect(consumer["socket.nagle.disable"] == "true" && consumer["security.protocol"] == "SSL")
        #expect(consumer["isolation.level"] == nil && consumer["group.id"] == "hijack", "the serving consumer takes kafka.consumer as given")
        #expect(consumer["partition.assignment.strategy"] == "cooperative-sticky")
        config.kafka.assignor = .range
        #expect(KafkaClients.consumer(config, brokers: "b").properties["partition.assignment.strategy"] == "range")
        // Readers never join the serving group, whatever kafka.consumer says.
        for reader in [KafkaClients.itemsReader(config, brokers: "b"), KafkaClients.retrainReader(config, brokers: "b"),
                       KafkaClients.modelUpdatesReader(config, brokers: "b")] {
            let p = reader.properties
            #expect(p["group.id"]?.hasPrefix("g-") == true && p["enable.auto.commit"] == "false" && p["security.protocol"] == "SSL")
        }
        // The changelog readers: committed data by default, uncommitted if asked (tansu), and
        // committed always in exactly-once mode; the standby waits longer, the restore prefetches more.
        let restore = KafkaClients.changelogReader(config, brokers: "b", standby: false).properties
        let standby = KafkaClients.changelogReader(config, brokers: "b", standby: true).properties
        #expect(restore["isolation.level"] == "read_committed" && restore["queued.min.messages"] == "1000000" && restore["fetch.wait.max.ms"] == "50")
        #expect(standby["fetch.wait.max.ms"] == "500" && standby["queued.min.messages"] == nil)
        config.state.changelogIsolation = .readUncommitted
        #expect(KafkaClients.changelogReader(config, brokers: "b", standby: true).properties["isolation.level"] == "read_uncommitted")
        config.delivery = .exactlyOnce
        #expect(KafkaClients.changelogReader(config, brokers: "b", standby: false).properties["isolation.level"] == "read_committed")
        let producer = KafkaClients.producer(config, brokers: "b").properties
        #expect(producer["transactional.id"] == "g.host-1" && producer["acks"] == "all" && producer["enable.idempotence"] == "true")
        #expect(KafkaClients.consumer(config, brokers: "b").properties["isolation.level"] == "read_committed")
        #expect(KafkaClients.changelogReader(config, brokers: "b", standby: false).properties["group.instance.id"] == nil)
    }

    /// A consumer pointed at a closed port: librdkafka logs the failed connection, and the line
    /// arrives in swift-log with its facility.
    @Test func librdkafkaLogLinesReachSwiftLog() throws {
        let captured = CapturedLines()
        let logger = Logger(label: "kafka-test") { _ in captured }
        KafkaClients.routeLogs(to: logger)
        defer { KafkaLogs.route(nil) }
        var c = KafkaClientConfig(brokers: "127.0.0.1:1")
        c.groupID = "log-test"
        c.logLevel = 7
        let consumer = try KafkaConsumer(c)
        defer { consumer.close() }
        try consumer.subscribe(["nothing"])
        let deadline = Date().addingTimeInterval(10)
        while captured.lines.isEmpty && Date() < deadline { _ = try? consumer.poll(maxMessages: 1, timeoutMs: 100) }
        #expect(!captured.lines.isEmpty)
        #expect(captured.lines.allSatisfy { $0.metadata["facility"] != nil && $0.metadata["client"] != nil })
    }
}

final class CapturedLines: LogHandler, @unchecked Sendable {
    struct Line { let level: Logger.Level; let message: String; let metadata: Logger.Metadata }
    private let lock = NSLock()
    private var stored: [Line] = []
    var lines: [Line] { lock.withLock { stored } }
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        lock.withLock { stored.append(Line(level: level, message: message.description, metadata: metadata ?? [:])) }
    }
}
