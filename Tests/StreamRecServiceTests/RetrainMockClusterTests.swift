import Foundation
import Testing
import StreamRecKafka
import StreamRecModels
@testable import StreamRecService

/// `streamrec retrain` against the mock cluster: the dataset builder, the gate, and the whole
/// loop (serve v1, retrain from the live topic, promote and announce v2, the service switches)
/// with exactly one answer per event.
@Suite(.serialized) struct RetrainMockClusterTests {
    static let base: Int64 = 1_700_000_000_000

    static func json(_ user: String, _ item: String, _ ts: Int64, id: String? = nil) -> [UInt8] {
        let idField = id.map { #","id":"\#($0)""# } ?? ""
        return Array(#"{"user":"\#(user)","item":"\#(item)","ts":\#(ts),"type":"click"\#(idField)}"#.utf8)
    }

    static func retrainConfig(_ h: MockClusterHarness, registry: String) -> StreamRecConfig {
        var c = h.config()
        c.model.snapshot = nil
        c.model.registry = registry
        c.retrain.workDirectory = h.work.appendingPathComponent("retrain").path
        c.retrain.minEvents = 20
        c.retrain.keep = 0
        return c
    }

    @Test func builderDedupesOrdersByTimeWindowsMergesABaseFileAndCountsInvalidEvents() throws {
        let h = try MockClusterHarness(partitions: 3, trainingSequences: [["a", "b", "c"]])
        let now = Date(timeIntervalSince1970: Double(Self.base) / 1000 + 7200)
        let windowStart = Self.base + 3_600_000
        try h.produce([
            // u1 out of time order across the topic; the builder orders by ts.
            ("u1", Self.json("u1", "i3", windowStart + 3000)),
            ("u1", Self.json("u1", "i1", windowStart + 1000)),
            ("u1", Self.json("u1", "i2", windowStart + 2000, id: "e2")),
            // The same event id twice (a producer retry with another ts): kept once.
            ("u1", Self.json("u1", "i2", windowStart + 2500, id: "e2")),
            // No id: same user, item and time is the same event.
            ("u2", Self.json("u2", "i7", windowStart + 10)),
            ("u2", Self.json("u2", "i7", windowStart + 10)),
            ("u2", Self.json("u2", "i8", windowStart + 20)),
            // Older than the window (event time).
            ("u2", Self.json("u2", "old", Self.base + 5)),
            // Invalid: skipped and counted by code.
            ("u3", Array("not json".utf8)),
            ("u3", Array(#"{"user":"u3","ts":5}"#.utf8)),
            ("someone-else", Self.json("u3", "i1", windowStart + 1)),
        ])
        // A base CSV (ms): u1's earlier history, a new user, and a copy of a topic event.
        let csv = h.work.appendingPathComponent("base.csv")
        try "user,item,ts\nu1,b0,\(Self.base)\nu9,x1,\(Self.base + 1)\nu9,x2,\(Self.base + 2)\nu2,i8,\(windowStart + 20)\n"
            .write(to: csv, atomically: true, encoding: .utf8)
        var config = Self.retrainConfig(h, registry: h.work.appendingPathComponent("registry").path)
        config.retrain.windowHours = 1
        config.retrain.baseData = csv.path
        let built = try RetrainDatasetBuilder.build(config: config, now: now, logger: MockClusterHarness.logger)
        let sequences = Dictionary(uniqueKeysWithValues: built.dataset.sequences.map { ($0.user, $0.items) })
        #expect(sequences["u1"] == ["b0", "i1", "i2", "i3"])
        #expect(sequences["u2"] == ["i7", "i8"])
        #expect(sequences["u9"] == ["x1", "x2"])
        #expect(sequences["u3"] == nil)
        let s = built.stats
        #expect(s.topicRecords == 11)
        #expect(s.topicValid == 8)
        #expect(s.invalid == ["malformed-json": 1, "missing-field": 1, "key-mismatch": 1])
        #expect(s.outsideWindow == 1)
        #expect(s.baseEvents == 4)
        #expect(s.duplicates == 3)   // id e2, u2/i7 repeated, the base copy of u2/i8
        #expect(s.interactions == 8)
        #expect(built.window.contains("+ base"))

        // Without a window everything retained is read, the old event included.
        config.retrain.windowHours = 0
        config.retrain.baseData = nil
        let all = try RetrainDatasetBuilder.build(config: config, now: now, logger: MockClusterHarness.logger)
        #expect(Dictionary(uniqueKeysWithValues: all.dataset.sequences.map { ($0.user, $0.items) })["u2"] == ["old", "i7", "i8"])
        #expect(all.stats.outsideWindow == 0)
    }

    @Test func gateArithmetic() {
        let gate = RetrainGate(maxRegression: 0.02)
        #expect(gate.passes(candidate: 0.30, current: 0.25))
        #expect(gate.passes(candidate: 0.245, current: 0.25))      // within 2%
        #expect(!gate.passes(candidate: 0.244, current: 0.25))     // beyond 2%
        #expect(gate.passes(candidate: 0.0, current: nil))         // first version
        #expect(RetrainGate(maxRegression: 0).passes(candidate: 0.25, current: 0.25))
    }

    /// Random sequences: a model that saw every event (the current one here) ranks the held-out
    /// targets far better than one trained without them, so the candidate must be refused.
    @Test func aWorseCandidateIsPublishedButNeverPromoted() throws {
        var state: UInt64 = 3
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let sequences: [[String]] = (0..<40).map { _ in (0..<8).map { _ in "r\(next() % 120)" } }
        let h = try MockClusterHarness(partitions: 2, trainingSequences: sequences)
        var n: Int64 = 0
        try h.produce(sequences.enumerated().flatMap { u, items in
            items.map { item -> (key: String?, value: [UInt8]) in
                n += 1
                return ("u\(u)", Self.json("u\(u)", item, Self.base + n))
            }
        })
        let registry = try ModelRegistry(root: h.work.appendingPathComponent("registry").path, create: true)
        let current = try registry.publish(snapshotPath: h.snapshot).version   // trained on everything
        try registry.promote(current)
        let outcome = try RetrainJob(config: Self.retrainConfig(h, registry: registry.root.path), logger: MockClusterHarness.logger).run()
        #expect(outcome.decision == .refused)
        #expect(outcome.exitCode == 3)
        #expect(outcome.candidateNDCG10 < (outcome.currentNDCG10 ?? 0) * 0.98)
        #expect(try registry.currentVersion() == current)
        #expect(try registry.list().map(\.version).contains(outcome.version))
        #expect(try registry.history().count == 1)
        let dir = registry.directory(of: outcome.version).path
        #expect(FileManager.default.fileExists(atPath: dir + "/model.snap.report.md"))
        #expect(try registry.show(outcome.version).metrics["gate_baseline_ndcg@10"] == outcome.currentNDCG10)
    }

    @Test func sasrecIsWarmStartedFromTheCurrentSASRecVersionWhenTheArchitectureMatches() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: [["a", "b", "c"]])
        func produceWalks(_ users: Range<Int>, items: Int, prefix: String, offset: Int64) throws {
            try h.produce(users.flatMap { u in
                (0..<8).map { k -> (key: String?, value: [UInt8]) in
                    ("u\(u)", Self.json("u\(u)", "\(prefix)\((u + k) % items)", Self.base + offset + Int64(u * 100 + k)))
                }
            })
        }
        try produceWalks(0..<30, items: 30, prefix: "i", offset: 0)
        let registry = try ModelRegistry(root: h.work.appendingPathComponent("registry").path, create: true)
        var config = Self.retrainConfig(h, registry: registry.root.path)
        config.retrain.model = "sasrec"
        config.training["sasrec"] = ["width": "16", "blocks": "1", "max_length": "12", "epochs": "2", "eval_every": "1", "batch_size": "16"]
        let first = try RetrainJob(config: config, logger: MockClusterHarness.logger).run()
        #expect(first.decision == .promoted && first.previous == nil)
        #expect(first.warmStart.contains("no current version"))
        #expect(try Snapshot.read(path: registry.snapshotPath(of: first.version)).manifest.kind == SASRec.kind)

        // New users and new items: the current model's rows are copied, the new items start fresh.
        try produceWalks(30..<40, items: 5, prefix: "n", offset: 10_000)
        config.retrain.maxRegression = 1      // this test is about the warm start, not the gate
        let second = try RetrainJob(config: config, logger: MockClusterHarness.logger).run()
        #expect(second.warmStart.hasPrefix("warm start: 30 item rows"), "\(second.warmStart)")
        #expect(second.warmStart.contains("5 new items"))
        #expect(second.decision == .promoted)

        config.training["sasrec"]?["width"] = "32"
        let third = try RetrainJob(config: config, logger: MockClusterHarness.logger).run()
        #expect(third.warmStart == "trained from scratch: width was 16, is now 32")
    }

    /// A steady stream from a background thread while retrain runs and v2 is promoted.
    final class StreamProducer: @unchecked Sendable {
        private let lock = NSLock()
        private var stopped = false
        private var sent = 0
        private var failure: Error?
        private let done = DispatchSemaphore(value: 0)

        init(h: MockClusterHarness, from start: Int, eventsPerSecond: Double) {
            let thread = Thread { [self] in
                do {
                    let producer = try KafkaProducer(properties: ["bootstrap.servers": h.cluster.bootstrapServers, "linger.ms": "2", "log_level": "3"])
                    var n = start
                    while !isStopped {
                        let e = RetrainMockClusterTests.event(n)
                        try producer.send(KafkaRecord(topic: h.input, key: Array(e.key.utf8), value: e.value))
                        n += 1
                        lock.withLock { sent = n }
                        producer.poll()
                        Thread.sleep(forTimeInterval: 1 / eventsPerSecond)
                    }
                    guard producer.flush(timeoutMs: 30_000), producer.takeDeliveryFailures().isEmpty else { throw HarnessError("stream undelivered") }
                    producer.close()
                } catch {
                    lock.withLock { failure = error }
                }
                done.signal()
            }
            thread.start()
        }

        private var isStopped: Bool { lock.withLock { stopped } }
        var count: Int { lock.withLock { sent } }
        /// Stops, flushes, and returns how many events were produced in total.
        func stop() throws -> Int {
            lock.withLock { stopped = true }
            done.wait()
            if let failure { throw failure }
            return count
        }
    }

    /// User u walks the items in steps of 3: what a model trained on the topic learns, and what
    /// the v1 model (steps of 1) does not know.
    static func event(_ n: Int) -> (key: String, value: [UInt8]) {
        let u = n % 12, step = n / 12
        return ("u\(u)", json("u\(u)", "i\((u * 5 + 3 * step) % 50)", base + Int64(n)))
    }

    @Test func retrainFromTheLiveTopicIsServedWithoutLosingOrRepeatingAnEvent() throws {
        let v1Training: [[String]] = (0..<60).map { u in (0..<20).map { "i\((u + $0) % 50)" } }
        let h = try MockClusterHarness(partitions: 3, trainingSequences: v1Training)
        let updates = "model-updates-\(h.id)"
        try h.cluster.createTopic(updates, partitions: 1)
        let registry = try ModelRegistry(root: h.work.appendingPathComponent("registry").path, create: true)
        let v1 = try registry.publish(snapshotPath: h.snapshot, dataWindow: "initial").version
        try registry.promote(v1)

        var config = Self.retrainConfig(h, registry: registry.root.path)
        config.kafka.modelUpdatesTopic = updates
        config.model.registryPollMs = 600_000     // the announcement must do it
        let service = try h.startService(config: config)
        #expect(service.stack.model.recommender.descriptor.version == v1)

        // History before the job, then a steady stream that runs through retrain and the swap.
        try h.produce((0..<600).map { let e = Self.event($0); return (e.key, e.value) })
        // v1 answers the history (the group join takes a few seconds on the mock cluster).
        #expect(try h.read(h.output) { $0.count >= 600 }.count >= 600)
        let stream = StreamProducer(h: h, from: 600, eventsPerSecond: 200)
        Thread.sleep(forTimeInterval: 0.5)

        let outcome = try RetrainJob(config: config, logger: MockClusterHarness.logger).run()
        #expect(outcome.decision == .promoted, "candidate \(outcome.candidateNDCG10) vs current \(String(describing: outcome.currentNDCG10))")
        #expect(outcome.announced)
        #expect(outcome.previous == v1)
        #expect(outcome.data.topicRecords >= 600 && outcome.data.invalidTotal == 0)
        let v2 = outcome.version
        #expect(v2 != v1)
        #expect(try registry.currentVersion() == v2)
        #expect(HotReloadMockClusterTests.waitFor(seconds: 20) { service.stack.model.recommender.descriptor.version == v2 },
                "v2 not served after the retrain's announcement")
        Thread.sleep(forTimeInterval: 1)          // answers by v2 too
        let total = try stream.stop()

        let answers = try h.read(h.output) { $0.count >= total }
        Thread.sleep(forTimeInterval: 0.5)
        let settled = try h.read(h.output, timeoutSeconds: 5) { $0.count > total }
        service.stop()
        #expect(service.error == nil)
        #expect(answers.count == total && settled.count == total, "\(answers.count)/\(settled.count) answers for \(total) events")
        let versions = try HotReloadMockClusterTests.versions(settled)
        #expect(Set(versions.map(\.n)) == Set(0..<total))
        #expect(Set(versions.map(\.version)) == [v1, v2])
        for partition in Set(settled.map(\.partition)) {
            let sequence = try HotReloadMockClusterTests.versions(settled.filter { $0.partition == partition }.sorted { $0.offset < $1.offset }).map(\.version)
            let switches = zip(sequence, sequence.dropFirst()).filter { $0 != $1 }.count
            #expect(sequence.first == v1 && sequence.last == v2 && switches == 1, "partition \(partition): \(switches) switches")
        }
    }
}
