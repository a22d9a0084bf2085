import Foundation
import Testing
import StreamRecKafka

/// The Kafka layer alone against the mock cluster: what goes in comes out, byte for byte.
@Suite(.serialized) struct KafkaRoundTripTests {
    @Test func recordsRoundTripWithKeysHeadersAndLargeValues() throws {
        let cluster = try MockCluster(brokers: 1)
        defer { cluster.shutdown() }
        let topic = "roundtrip-\(UUID().uuidString.prefix(8))"
        try cluster.createTopic(topic, partitions: 3)
        let producer = try KafkaProducer(properties: ["bootstrap.servers": cluster.bootstrapServers, "log_level": "3"])
        var sent: [String: (key: [UInt8]?, value: [UInt8])] = [:]
        for n in 0..<3000 {
            let value: [UInt8] = n % 10 == 0 ? [UInt8](repeating: UInt8(n % 251), count: 18_000 + n) : Array("v\(n)".utf8)
            let key: [UInt8]? = n % 7 == 0 ? nil : Array("k\(n % 50)".utf8)
            sent["\(n)"] = (key, value)
            try producer.send(KafkaRecord(topic: topic, key: key, value: value, headers: [KafkaHeader("n", "\(n)")]), token: n)
        }
        #expect(producer.flush(timeoutMs: 30_000))
        #expect(producer.takeDeliveryFailures().isEmpty)
        producer.close()

        let consumer = try KafkaConsumer(properties: ["bootstrap.servers": cluster.bootstrapServers, "group.id": "g-\(UUID().uuidString)",
                                                      "auto.offset.reset": "earliest", "log_level": "3"])
        try consumer.subscribe([topic])
        var received: [String: KafkaMessage] = [:]
        let deadline = Date().addingTimeInterval(60)
        while received.count < sent.count && Date() < deadline {
            for m in try consumer.poll(maxMessages: 1000, timeoutMs: 100) {
                received[String(decoding: m.header("n") ?? [], as: UTF8.self)] = m
            }
        }
        consumer.close()
        #expect(received.count == sent.count)
        for (n, record) in sent {
            guard let m = received[n] else { continue }
            #expect(m.key == record.key, "key of \(n)")
            #expect(m.value == record.value, "value of \(n)")
        }
    }
}
