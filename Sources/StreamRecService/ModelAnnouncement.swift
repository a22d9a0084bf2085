// Announcements on the compacted `model-updates` topic: key = model name, value = the version
// every serving instance should serve now (docs/events.md). Compaction keeps the latest per name.
import Foundation
import StreamRecKafka

public struct ModelAnnouncement: Codable, Sendable, Equatable {
    public var version: String
    /// Absolute path of the snapshot in the announcer's registry.
    public var path: String
    public var kind: String
    /// "fnv1a64:<16 hex>" of the snapshot file (RegistryManifest.snapshot.checksum).
    public var checksum: String
    /// Milliseconds since the epoch.
    public var announcedAt: Int64
    /// promote or rollback (informational).
    public var action: String?

    enum CodingKeys: String, CodingKey {
        case version, path, kind, checksum, action
        case announcedAt = "announced_at"
    }

    public init(version: String, path: String, kind: String, checksum: String, announcedAt: Int64 = Pipeline.nowMs(), action: String? = nil) {
        self.version = version
        self.path = path
        self.kind = kind
        self.checksum = checksum
        self.announcedAt = announcedAt
        self.action = action
    }

    /// The announcement of a registry version.
    public init(registry: ModelRegistry, manifest: RegistryManifest, action: String?) {
        self.init(version: manifest.version, path: registry.snapshotPath(of: manifest.version), kind: manifest.kind,
                  checksum: manifest.snapshot.checksum, action: action)
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    public static func decode(_ bytes: [UInt8]) -> ModelAnnouncement? {
        try? JSONDecoder().decode(ModelAnnouncement.self, from: Data(bytes))
    }
}

public enum ModelAnnouncer {
    /// Publishes one announcement and waits until the brokers acknowledge it. Blocking: call it on
    /// a dedicated thread (`onDedicatedThread`).
    public static func announce(_ announcement: ModelAnnouncement, name: String, brokers: String, topic: String,
                                properties: [String: String] = [:], timeoutMs: Int32 = 30_000) throws {
        let producer = try KafkaProducer(KafkaClients.announcer(brokers: brokers, overrides: properties))
        defer { producer.close(flushTimeoutMs: 1_000) }
        try producer.send(KafkaRecord(topic: topic, key: Array(name.utf8), value: announcement.encoded(),
                                      headers: [KafkaHeader("model-version", announcement.version)]))
        guard producer.flush(timeoutMs: timeoutMs) else {
            throw KafkaError(.timeout, "the announcement of \(announcement.version) on \(topic) was not acknowledged within \(timeoutMs) ms; the registry pointer is already updated (servers polling it will follow), so check the brokers and run the command again to announce")
        }
        if let failure = producer.takeDeliveryFailures().first {
            throw KafkaError(.produce, "the announcement of \(announcement.version) on \(topic) failed: \(failure.error.message); create the topic with `streamrec topics apply` and run the command again (the registry pointer is already updated)")
        }
    }
}
