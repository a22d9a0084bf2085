import Foundation
import Testing
import StreamRecKafka
import StreamRecModels
import StreamRecStorage
@testable import StreamRecService

/// The real pipeline against librdkafka's in-process mock cluster. Serialized: each test runs a
/// cluster, a service and readers, and the machine has two cores.
@Suite(.serialized) struct PipelineMockClusterTests {
    static let training: [[String]] = (0..<60).map { u in (0..<20).map { "i\((u + $0) % 40)" } }

    struct Sent {
        var user: String
        var item: String
    }

    static func json(_ user: String, _ item: String, _ ts: Int64, type: String = "click") -> [UInt8] {
        Array(#"{"user":"\#(user)","item":"\#(item)","ts":\#(ts),"type":"\#(type)","id":"e-\#(user)-\#(ts)"}"#.utf8)
    }

    static let invalidPayloads: [(key: String?, value: String, code: String)] = [
        ("u1", "{broken", "malformed-json"),
        ("u1", "[]", "not-an-object"),
        ("u1", #"{"item":"i1","ts":1}"#, "missing-field"),
        ("u1", #"{"user":"u1","item":2,"ts":1}"#, "bad-type"),
        ("u1", #"{"user":"u1","item":"i1","ts":1,"type":"teleport"}"#, "unknown-event-type"),
        ("u9", #"{"user":"u1","item":"i1","ts":1}"#, "key-mismatch"),
        ("u1", "{\"user\":\"u1\",\"item\":\"" + String(repeating: "x", count: 20_000) + "\",\"ts\":1}", "oversize"),
    ]

    @Test func validEventsAreAnsweredInOrderAndInvalidOnesDeadLettered() throws {
        let h = try MockClusterHarness(partitions: 3, trainingSequences: Self.training)
        let users = (0..<25).map { "u\($0)" }
        var records: [(key: String?, value: [UInt8])] = []
        var sent: [String: [String]] = [:]
        var invalidCodes: [String: Int] = [:]
        var ts: Int64 = 1_700_000_000_000
        for n in 0..<400 {
            let user = users[(n * 7) % users.count]
            let item = "i\((n * 13) % 90)"
            records.append((user, Self.json(user, item, ts)))
            sent[user, default: []].append(item)
            ts += 100
            if n % 7 == 3 {
                let bad = Self.invalidPayloads[(n / 7) % Self.invalidPayloads.count]
                records.append((bad.key, Array(bad.value.utf8)))
                invalidCodes[bad.code, default: 0] += 1
            }
        }
        let validCount = 400
        let invalidCount = invalidCodes.values.reduce(0, +)
        // Invalid UTF-8 and an empty value, which no JSON string literal can carry.
        records.append(("u1", [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x7D]))
        records.append(("u1", []))
        invalidCodes["invalid-utf8", default: 0] += 1
        invalidCodes["empty-value", default: 0] += 1
        try h.produce(records)

        let service = try h.startService()
        let recs = try h.read(h.output) { $0.count >= validCount }
        let dead = try h.read(h.dlq) { $0.count >= invalidCount + 2 }
        service.stop()
        #expect(service.error == nil)
        // Nothing more arrives after the stop: exactly one answer per valid event.
        let recsAfter = try h.read(h.output, timeoutSeconds: 5) { $0.count > validCount }
        #expect(recs.count == validCount)
        #expect(recsAfter.count == validCount)
        #expect(dead.count == invalidCount + 2)

        var dlqCodes: [String: Int] = [:]
        for m in dead {
            let code = String(decoding: m.header("dlq-code") ?? [], as: UTF8.self)
            dlqCodes[code, default: 0] += 1
            #expect(m.header("dlq-reason").map { !$0.isEmpty } == true)
            #expect(m.header("source-offset") != nil && m.header("source-partition") != nil)
            #expect(String(decoding: m.header("source-topic") ?? [], as: UTF8.self) == h.input)
        }
        #expect(dlqCodes == invalidCodes)

        // Per user, answers arrive in input order and name the event they answer.
        var answered: [String: [String]] = [:]
        var lastOffset: [String: Int64] = [:]
        for m in recs {
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(m.value ?? [])) as? [String: Any])
            let user = try #require(obj["user"] as? String)
            let source = try #require(obj["source"] as? [String: Any])
            let offset = try #require((source["offset"] as? NSNumber)?.int64Value)
            #expect(offset > lastOffset[user, default: -1], "answers for \(user) out of order")
            lastOffset[user] = offset
            answered[user, default: []].append(try #require(obj["event_item"] as? String))
            let items = try #require(obj["items"] as? [[String: Any]])
            #expect(items.count == 10)
            #expect((obj["model"] as? [String: Any])?["name"] as? String == "transition")
            #expect(m.header("model-version") != nil && m.header("source-offset") != nil)
            #expect(String(decoding: m.key ?? [], as: UTF8.self) == user)
        }
        #expect(answered == sent)

        // LevelDB holds each session exactly once, in order.
        let store = try KeyValueStore(path: h.stateDirectory)
        defer { store.close() }
        let vocabulary = try Vocabulary(store: store)
        let sessions = SessionStore(store: store, policy: SessionPolicy())
        for (user, items) in sent {
            let session = try sessions.session(for: user, nowMs: 0)
            #expect(session.items.map { vocabulary.external(for: $0)! } == items)
        }
        let offsets = try sessions.allOffsets().filter { $0.topic == h.input }
        #expect(offsets.reduce(0) { $0 + $1.nextOffset } == Int64(records.count))
    }

    @Test func restartResumesFromLevelDBWithoutReprocessing() throws {
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training)
        var expected: [String: [String]] = [:]
        func batch(_ range: Range<Int>) -> [(key: String?, value: [UInt8])] {
            range.map { n in
                let user = "u\(n % 10)"
                let item = "x\(n)"          // every event distinct: a replay would show as a duplicate
                expected[user, default: []].append(item)
                return (user, Self.json(user, item, 1_700_000_000_000 + Int64(n)))
            }
        }
        try h.produce(batch(0..<150))
        var service = try h.startService()
        _ = try h.read(h.output) { $0.count >= 150 }
        service.stop()

        try h.produce(batch(150..<300))
        service = try h.startService()
        let all = try h.read(h.output) { $0.count >= 300 }
        service.stop()
        #expect(all.count == 300)

        let store = try KeyValueStore(path: h.stateDirectory)
        defer { store.close() }
        let vocabulary = try Vocabulary(store: store)
        let sessions = SessionStore(store: store, policy: SessionPolicy())
        for (user, items) in expected {
            #expect(try sessions.session(for: user, nowMs: 0).items.map { vocabulary.external(for: $0)! } == items)
        }
    }

    @Test func corruptSnapshotIsRefusedWithAClearError() throws {
        let h = try MockClusterHarness(partitions: 1, trainingSequences: Self.training)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: h.snapshot)))
        bytes[bytes.count / 2] ^= 0x5A
        let corrupt = h.work.appendingPathComponent("corrupt.snap").path
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        var config = h.config()
        config.model.snapshot = corrupt
        do {
            _ = try h.startService(config: config)
            Issue.record("a corrupt snapshot was accepted")
        } catch {
            #expect("\(error)".lowercased().contains("checksum") || "\(error)".lowercased().contains("corrupt"), "\(error)")
        }
    }

    @Test func servesSASRecAndKeepsItWhenAReloadIsCorrupt() throws {
        // A small SASRec trained on the same synthetic walks, written as a v1 snapshot.
        let h = try MockClusterHarness(partitions: 2, trainingSequences: Self.training) { work in
            let dataset = SequenceDataset(sequences: Self.training.enumerated().map { ("t\($0.offset)", $0.element) }, source: "synthetic")
            let split = EncodedSplit(dataset)
            var c = SASRecConfig()
            c.width = 16; c.maxLength = 16; c.epochs = 3; c.evalEvery = 3; c.batchSize = 16
            let model = SASRec(config: c, items: split.items)
            try SASRecTrainer(model: model).fit(split)
            let path = work.appendingPathComponent("sasrec.snap").path
            try model.save(to: path)
            return path
        }
        let version = try SASRec.load(path: h.snapshot).version
        func events(_ range: Range<Int>) -> [(key: String?, value: [UInt8])] {
            range.map { n in let user = "u\(n % 8)"; return (user, Self.json(user, "i\((n * 3) % 40)", 1_700_000_000_000 + Int64(n))) }
        }
        try h.produce(events(0..<120))
        let service = try h.startService()
        let first = try h.read(h.output) { $0.count >= 120 }
        #expect(first.count == 120)
        for m in first {
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(m.value ?? [])) as? [String: Any])
            let model = try #require(obj["model"] as? [String: Any])
            #expect(model["name"] as? String == "sasrec" && model["version"] as? String == version)
            #expect((obj["items"] as? [[String: Any]])?.count == 10)
        }

        // A corrupt snapshot is refused with a clear error; the current model keeps serving.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: h.snapshot)))
        bytes[bytes.count - 64] ^= 0x21
        let corrupt = h.work.appendingPathComponent("corrupt.snap").path
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        #expect(throws: ModelError.self) { try service.stack.reloadModel(path: corrupt, metrics: service.metrics, logger: MockClusterHarness.logger) }
        #expect(service.stack.model.recommender.descriptor == ModelDescriptor(name: "sasrec", version: version))

        try h.produce(events(120..<160))
        let all = try h.read(h.output) { $0.count >= 160 }
        service.stop()
        #expect(service.error == nil)
        #expect(all.count == 160)
        let versions = Set(try all.map { m -> String in
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(m.value ?? [])) as? [String: Any])
            return try #require((obj["model"] as? [String: Any])?["version"] as? String)
        })
        #expect(versions == [version])
    }
}
