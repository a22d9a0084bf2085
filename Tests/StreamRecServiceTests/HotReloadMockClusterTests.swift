import Foundation
import Testing
import StreamRecKafka
import StreamRecModels
@testable import StreamRecService

/// Hot reload against the mock cluster: a service serving from a registry follows promote and
/// rollback announcements between micro-batches, answers every event exactly once, and keeps
/// serving when an announced version is corrupt.
@Suite(.serialized) struct HotReloadMockClusterTests {
    static let trainingV1: [[String]] = (0..<60).map { u in (0..<20).map { "i\((u + $0) % 40)" } }
    /// Walks the other way round the items: other successors, so another model version.
    static let trainingV2: [[String]] = (0..<60).map { u in (0..<20).map { "i\((u + 400 - 3 * $0) % 40)" } }
    static let trainingV3: [[String]] = (0..<60).map { u in (0..<20).map { "i\((u * 7 + 5 * $0) % 40)" } }

    static func event(_ n: Int) -> (key: String?, value: [UInt8]) {
        let user = "u\(n % 12)"
        return (user, Array(#"{"user":"\#(user)","item":"i\#((n * 13) % 40)","ts":\#(1_700_000_000_000 + Int64(n)),"type":"click"}"#.utf8))
    }

    /// event_ts - base -> model version, for every answer read.
    static func versions(_ messages: [KafkaMessage]) throws -> [(n: Int, version: String)] {
        try messages.map { m in
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(m.value ?? [])) as? [String: Any])
            let ts = try #require(obj["event_ts"] as? Int64 ?? (obj["event_ts"] as? NSNumber)?.int64Value)
            let version = try #require((obj["model"] as? [String: Any])?["version"] as? String)
            return (Int(ts - 1_700_000_000_000), version)
        }
    }

    static func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    static func snapshot(_ training: [[String]], _ h: MockClusterHarness, _ name: String) throws -> String {
        let path = h.work.appendingPathComponent(name).path
        try TransitionModel.train(sequences: training, config: TransitionConfig(), source: name).save(to: path)
        return path
    }

    @Test func promoteAndRollbackAreFollowedBetweenBatchesAndACorruptVersionIsRefused() throws {
        let h = try MockClusterHarness(partitions: 3, trainingSequences: Self.trainingV1)
        let updates = "model-updates-\(h.id)"
        try h.cluster.createTopic(updates, partitions: 1)
        let registry = try ModelRegistry(root: h.work.appendingPathComponent("registry").path, create: true)
        let v1 = try registry.publish(snapshotPath: h.snapshot, dataWindow: "day 1").version
        try registry.promote(v1)
        let v2 = try registry.publish(snapshotPath: try Self.snapshot(Self.trainingV2, h, "v2.snap"), dataWindow: "day 2").version
        #expect(v1 != v2)

        var config = h.config()
        config.model.snapshot = nil               // serve the registry's current version
        config.model.registry = registry.root.path
        config.model.registryPollMs = 600_000     // announcements only: the pointer fallback has its own test
        config.kafka.modelUpdatesTopic = updates
        let service = try h.startService(config: config)
        #expect(service.stack.model.recommender.descriptor.version == v1)
        func announce(_ version: String, _ action: String) throws {
            try ModelAnnouncer.announce(ModelAnnouncement(registry: registry, manifest: try registry.show(version), action: action),
                                        name: config.model.name, brokers: h.cluster.bootstrapServers, topic: updates)
        }
        func serving() -> String { service.stack.model.recommender.descriptor.version }
        var total = 0
        func stream(_ range: Range<Int>) throws -> [(n: Int, version: String)] {
            try h.produce(range.map(Self.event))
            total = range.upperBound
            return try Self.versions(try h.read(h.output) { $0.count >= total }).filter { range.contains($0.n) }
        }

        let before = try stream(0..<150)
        #expect(before.count == 150 && before.allSatisfy { $0.version == v1 })

        // Promote v2 and announce it: swapped within seconds; every later answer names v2.
        try registry.promote(v2)
        try announce(v2, "promote")
        #expect(Self.waitFor(seconds: 20) { serving() == v2 }, "v2 not served after its announcement")
        let afterPromote = try stream(150..<300)
        #expect(afterPromote.count == 150 && afterPromote.allSatisfy { $0.version == v2 })

        // Roll back: v1 again within seconds.
        let started = Date()
        let rolled = try registry.rollback()
        #expect(rolled == (from: v2, to: v1))
        try announce(v1, "rollback")
        #expect(Self.waitFor(seconds: 10) { serving() == v1 }, "rollback to v1 not served within 10 s")
        #expect(Date().timeIntervalSince(started) < 10)
        let afterRollback = try stream(300..<450)
        #expect(afterRollback.count == 150 && afterRollback.allSatisfy { $0.version == v1 })

        // A corrupt version announced: refused (and counted), the current one keeps serving.
        let v3 = try registry.publish(snapshotPath: try Self.snapshot(Self.trainingV3, h, "v3.snap")).version
        let copy = registry.snapshotPath(of: v3)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: copy)))
        bytes[bytes.count - 40] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: copy))
        try announce(v3, "promote")
        #expect(Self.waitFor(seconds: 20) { service.watcher?.counts.refused == 1 }, "the corrupt version was not refused")
        #expect(serving() == v1)
        let afterCorrupt = try stream(450..<600)
        #expect(afterCorrupt.count == 150 && afterCorrupt.allSatisfy { $0.version == v1 })

        // A swap in the middle of a stream: on each output partition the answers switch from v1
        // to v2 once, at a batch boundary, never back and forth.
        try registry.promote(v2)
        for chunk in stride(from: 600, to: 900, by: 30) {
            try h.produce((chunk..<(chunk + 30)).map(Self.event))
            if chunk == 720 { try announce(v2, "promote") }
        }
        #expect(Self.waitFor(seconds: 20) { serving() == v2 })
        let mixed = try h.read(h.output) { $0.count >= 900 }.filter { m in
            (try? Self.versions([m]).first.map { (600..<900).contains($0.n) }) ?? false
        }
        #expect(mixed.count == 300)
        for partition in Set(mixed.map(\.partition)) {
            let sequence = try Self.versions(mixed.filter { $0.partition == partition }.sorted { $0.offset < $1.offset }).map(\.version)
            let switches = zip(sequence, sequence.dropFirst()).filter { $0 != $1 }.count
            #expect(switches <= 1 && (sequence.first == v1 || sequence.first == v2) && (switches == 0 || sequence.last == v2), "partition \(partition): \(sequence)")
        }

        // Exactly one answer per event over the whole run: none lost, none repeated.
        Thread.sleep(forTimeInterval: 0.5)
        let all = try Self.versions(try h.read(h.output) { $0.count >= 900 })
        service.stop()
        #expect(service.error == nil)
        #expect(all.count == 900)
        #expect(Set(all.map(\.n)) == Set(0..<900))
        #expect(service.watcher?.counts.swapped == 3)
    }

    @Test func registryPointerIsFollowedWithoutAnnouncements() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.trainingV1)
        let registry = try ModelRegistry(root: h.work.appendingPathComponent("registry").path, create: true)
        let v1 = try registry.publish(snapshotPath: h.snapshot).version
        try registry.promote(v1)
        let v2 = try registry.publish(snapshotPath: try Self.snapshot(Self.trainingV2, h, "v2.snap")).version
        var config = h.config()
        config.model.snapshot = nil
        config.model.registry = registry.root.path
        config.model.registryPollMs = 200
        config.kafka.modelUpdatesTopic = "model-updates-missing-\(h.id)"   // no topic: pointer only
        let service = try h.startService(config: config)
        #expect(service.stack.model.recommender.descriptor.version == v1)
        try registry.promote(v2)
        // Generous: with the whole suite running on 2 cores, the watcher's first metadata lookup for
        // the missing topic can take seconds before the pointer poll gets its turn.
        #expect(Self.waitFor(seconds: 30) { service.stack.model.recommender.descriptor.version == v2 })
        try h.produce((0..<60).map(Self.event))
        let answers = try Self.versions(try h.read(h.output) { $0.count >= 60 })
        service.stop()
        #expect(service.error == nil)
        #expect(answers.count == 60 && answers.allSatisfy { $0.version == v2 })
    }
}
