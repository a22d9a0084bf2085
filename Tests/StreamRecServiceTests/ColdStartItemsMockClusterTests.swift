import Foundation
import Testing
import StreamRecKafka
import StreamRecModels
import StreamRecNumerics
import StreamRecText
@testable import StreamRecService

/// The MiniLM folder (ops/fetch-minilm.sh), or nil: the real-encoder test is then skipped.
let miniLMDirectory: URL? = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let directory = SentenceEncoder.defaultDirectory(root: root)
    return FileManager.default.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path) ? directory : nil
}()

/// Cold-start items: an item published on the `items` topic becomes recommendable by a running
/// LLMSeqSim, LLM2SASRec or LLM2BERT4Rec service, without a restart, and unknown items in
/// sessions never stop anything.
@Suite(.serialized) struct ColdStartItemsMockClusterTests {
    static let dimension = 8

    /// A fake encoder: a text naming "cluster K" lands near axis K (a little noise from the text).
    static let embedder: TextEmbedder = { texts in
        texts.map { text in
            var v = [Float](repeating: 0, count: dimension)
            let k = text.split(separator: " ").compactMap { Int($0) }.first ?? 0
            v[k % dimension] = 1
            v[(k + 1) % dimension] = Float(text.utf8.count % 7) * 0.01
            return v
        }
    }

    static func event(_ user: String, _ item: String, _ ts: Int64) -> [UInt8] {
        Array(#"{"user":"\#(user)","item":"\#(item)","ts":\#(ts),"type":"click"}"#.utf8)
    }

    /// Items c<k>-<j> in 4 clusters of 5, each text naming its cluster.
    static let items = (0..<4).flatMap { k in (0..<5).map { "c\(k)-\($0)" } }

    /// A service started from the fake encoder's cache of `items` and the snapshot `model` makes
    /// from it, with an ItemIngestor on a new `items` topic; `publish` goes to that topic, and
    /// the call returns once the ingestor has read `expectAdded` new items (or after 60 s).
    static func serveWithIngestor(k: Int, publish: [(key: String?, value: [UInt8])], expectAdded: Int,
                                  model: @escaping (EmbeddingCache, String, URL) throws -> String)
        throws -> (h: MockClusterHarness, service: RunningService, cachePath: String) {
        var cachePath = ""
        let h = try MockClusterHarness(partitions: 2, trainingSequences: []) { work in
            // The cache and snapshot the service starts from: every item but the published ones.
            let cache = EmbeddingCache(modelID: "fake", dimension: dimension)
            try cache.update(items.map { ($0, "cluster \($0.dropFirst().prefix(1)) item \($0)") }, embed: embedder)
            cachePath = work.appendingPathComponent("items.emb").path
            try cache.save(to: cachePath)
            return try model(cache, cachePath, work)
        }
        let itemsTopic = "items-\(h.id)"
        try h.cluster.createTopic(itemsTopic, partitions: 2)
        var config = h.config()
        config.kafka.itemsTopic = itemsTopic
        config.model.embeddings = cachePath
        config.recommend.k = k
        let service = try h.startService(config: config) { stack, metrics in
            ItemIngestor(stack: stack, cache: try EmbeddingCache.load(path: cachePath), cachePath: cachePath, embed: embedder,
                         metrics: metrics, logger: MockClusterHarness.logger)
        }
        try h.produce(publish, topic: itemsTopic)
        let deadline = Date().addingTimeInterval(60)
        while service.ingestor!.counts.added < expectAdded && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        return (h, service, cachePath)
    }

    @Test func aPublishedItemBecomesRecommendableWithoutARestart() throws {
        // A bad record first: counted and skipped, never fatal.
        let (h, service, cachePath) = try Self.serveWithIngestor(
            k: 3, publish: [("bad-1", Array("{not json".utf8)), ("c2-new", Array(#"{"title":"cluster 2 newcomer","extra":"B00NEWASIN"}"#.utf8))],
            expectAdded: 1) { cache, _, work in
                let path = work.appendingPathComponent("llmseqsim.snap").path
                try LLMSeqSim.build(cache: cache).save(to: path)
                return path
            }
        defer { service.stop() }
        #expect(service.ingestor!.counts == (added: 1, embedded: 1, rejected: 1))
        // The cache on disk holds the new item (for the next snapshot and the next start).
        #expect(try EmbeddingCache.load(path: cachePath).vector(for: "c2-new") != nil)

        // A session of cluster-2 items (and an item nobody announced): the newcomer is in its top 3.
        try h.produce([("u1", Self.event("u1", "c2-0", 1_000)), ("u1", Self.event("u1", "never-announced", 1_001)),
                       ("u1", Self.event("u1", "c2-1", 1_002)), ("u1", Self.event("u1", "c2-2", 1_003)),
                       ("u2", Self.event("u2", "only-unknown", 1_004))])
        let out = try h.read(h.output, until: { $0.count >= 5 })
        #expect(out.count == 5)
        let answers = out.compactMap { try? JSONSerialization.jsonObject(with: Data($0.value ?? [])) as? [String: Any] }
        let last = answers.first { ($0["event_item"] as? String) == "c2-2" }
        let recommended = ((last?["items"] as? [[String: Any]]) ?? []).compactMap { $0["item"] as? String }
        #expect(recommended.contains("c2-new"), "got \(recommended)")
        #expect(recommended.allSatisfy { $0.hasPrefix("c2-") })
        // The user with only an unknown item got an (empty) answer, not a stall.
        let empty = answers.first { ($0["event_item"] as? String) == "only-unknown" }
        #expect((empty?["items"] as? [Any])?.isEmpty == true)
    }

    /// The text-started sequential models served live: a model trained from the cache answers
    /// every event, and an item first published on the `items` topic is rankable at once (it is
    /// in a full ranking, through the snapshot's text projection), without a restart or retrain.
    @Test(arguments: ["llm2sasrec", "llm2bert4rec"])
    func aTextStartedModelServesLiveAndRanksAPublishedItem(kind: String) throws {
        let (h, service, _) = try Self.serveWithIngestor(
            k: Self.items.count + 1, publish: [("c2-new", Array(#"{"title":"cluster 2 newcomer"}"#.utf8))], expectAdded: 1) { _, cachePath, work in
                // Walks inside one cluster: c<k>-0, c<k>-1, ... c<k>-4.
                let sequences = (0..<40).map { u in ("u\(u)", (0..<5).map { "c\(u % 4)-\($0)" }) }
                var job = TrainingJob(kind: kind, dataset: SequenceDataset(sequences: sequences, source: "walks"), holdout: .none, source: "walks")
                job.embeddings = cachePath
                let result = try ModelCatalogue.standard.train(job, settings: ["width": "8", "heads": "2", "blocks": "1", "max_length": "8",
                                                                               "epochs": "2", "eval_every": "2", "batch_size": "16"])
                let path = work.appendingPathComponent("\(kind).snap").path
                try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: path)
                return path
            }
        defer { service.stop() }
        // The family serves it; the snapshot's text projection makes it text-started.
        #expect(service.stack.model.recommender.descriptor.name == String(kind.dropFirst(4)))
        #expect((service.stack.model.recommender as? any ItemExtensibleRecommender)?.textDimension == Self.dimension)
        #expect(service.ingestor!.counts == (added: 1, embedded: 1, rejected: 0))

        let events = (0..<3).map { ("u1", Self.event("u1", "c2-\($0)", Int64(1_000 + $0))) }
            + (0..<2).map { ("u2", Self.event("u2", "c0-\($0)", Int64(1_000 + $0))) }
        try h.produce(events)
        let out = try h.read(h.output, until: { $0.count >= events.count })
        #expect(out.count == events.count)
        for record in out {
            let answer = try #require(try JSONSerialization.jsonObject(with: Data(record.value ?? [])) as? [String: Any])
            let ranked = ((answer["items"] as? [[String: Any]]) ?? []).compactMap { $0["item"] as? String }
            let seen = answer["event_item"] as? String ?? "?"
            // Every item but the session's own (history excluded), the newcomer among them.
            #expect(ranked.contains("c2-new"), "\(seen): \(ranked)")
            #expect(Set(ranked).count == ranked.count && !ranked.contains(seen))
        }
    }

    /// The path `serve` takes (ItemIngestor.fromConfig: cache file + MiniLM), with real titles.
    @Test(.enabled(if: miniLMDirectory != nil, "needs models/all-MiniLM-L6-v2 (ops/fetch-minilm.sh)"))
    func withTheRealEncoderANewSequelFollowsItsSeries() throws {
        let directory = miniLMDirectory!
        let titles: [(String, String, String)] = [
            ("1", "Toy Story (1995)", "Animation|Children's|Comedy"), ("3114", "Toy Story 2 (1999)", "Animation|Children's|Comedy"),
            ("6", "Heat (1995)", "Action|Crime|Thriller"), ("296", "Pulp Fiction (1994)", "Crime|Drama"),
            ("912", "Casablanca (1942)", "Drama|Romance|War"), ("1214", "Alien (1979)", "Action|Horror|Sci-Fi"),
            ("1196", "Star Wars: Episode V - The Empire Strikes Back (1980)", "Action|Adventure|Drama|Sci-Fi|War"),
            ("1721", "Titanic (1997)", "Drama|Romance"), ("2028", "Saving Private Ryan (1998)", "Action|Drama|War"),
            ("858", "Godfather, The (1972)", "Action|Crime|Drama"), ("2571", "Matrix, The (1999)", "Action|Sci-Fi|Thriller"),
        ]
        var cachePath = ""
        let h = try MockClusterHarness(partitions: 1, trainingSequences: []) { work in
            let encoder = try SentenceEncoder(directory: directory, threads: 1)
            let cache = EmbeddingCache(modelID: try EmbeddingCache.modelID(directory: directory), dimension: encoder.dimension)
            try cache.update(titles.map { ($0.0, ItemText.text(title: $0.1, extra: $0.2)) }, embed: { encoder.encode($0) })
            cachePath = work.appendingPathComponent("ml.emb").path
            try cache.save(to: cachePath)
            let path = work.appendingPathComponent("llmseqsim.snap").path
            try LLMSeqSim.build(cache: cache).save(to: path)
            return path
        }
        let itemsTopic = "items-\(h.id)"
        try h.cluster.createTopic(itemsTopic, partitions: 1)
        var config = h.config()
        config.kafka.itemsTopic = itemsTopic
        config.model.embeddings = cachePath
        config.model.encoder = directory.path
        config.recommend.k = 3
        let service = try h.startService(config: config) { stack, metrics in
            try #require(try ItemIngestor.fromConfig(stack: stack, metrics: metrics, logger: MockClusterHarness.logger))
        }
        defer { service.stop() }
        #expect(service.ingestor!.cache.count == titles.count)   // the cache file was reused, not replaced
        try h.produce([("78499", Array(#"{"title":"Toy Story 3 (2010)","extra":"Animation|Children's|Comedy"}"#.utf8))], topic: itemsTopic)
        let deadline = Date().addingTimeInterval(60)
        while service.ingestor!.counts.added < 1 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(service.ingestor!.counts == (added: 1, embedded: 1, rejected: 0))
        try h.produce([("u1", Self.event("u1", "1", 1_000)), ("u1", Self.event("u1", "3114", 1_001))])
        let out = try h.read(h.output, until: { $0.count >= 2 })
        let answers = out.compactMap { try? JSONSerialization.jsonObject(with: Data($0.value ?? [])) as? [String: Any] }
        let last = answers.first { ($0["event_item"] as? String) == "3114" }
        let recommended = ((last?["items"] as? [[String: Any]]) ?? []).compactMap { $0["item"] as? String }
        #expect(recommended.first == "78499", "got \(recommended)")
    }
}
