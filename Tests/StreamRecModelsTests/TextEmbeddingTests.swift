import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

/// Unit vectors in clusters: item "c<k>-<i>" lies near axis k.
func clusteredCache(clusters: Int, perCluster: Int, dimension: Int = 8, seed: UInt64 = 3) throws -> EmbeddingCache {
    var rng = RandomSource(seed: seed)
    let cache = EmbeddingCache(modelID: "test@0-0", dimension: dimension)
    for k in 0..<clusters {
        for i in 0..<perCluster {
            var v = (0..<dimension).map { _ in 0.1 * rng.normal() }
            v[k % dimension] += 1
            try cache.add(id: "c\(k)-\(i)", vector: v, textHash: EmbeddingCache.textHash("c\(k)-\(i)"))
        }
    }
    return cache
}

@Suite struct EmbeddingCacheTests {
    @Test func textRuleKeepsGenresAndDropsIdentifiers() {
        #expect(ItemText.text(title: "Toy Story (1995)", extra: "Animation|Children's|Comedy") == "Toy Story (1995) Animation|Children's|Comedy")
        #expect(ItemText.text(title: "Heat (1995)", extra: "Drama") == "Heat (1995) Drama")
        #expect(ItemText.text(title: "OPI Nail Lacquer", extra: "B004756YJA") == "OPI Nail Lacquer")
        #expect(ItemText.text(title: "", extra: "B004756YJA") == "B004756YJA")
        #expect(ItemText.text(title: "Lipstick", extra: nil) == "Lipstick")
    }

    @Test func roundTripsAndKnowsWhatChanged() throws {
        let dir = try TemporaryDirectory()
        let cache = EmbeddingCache(modelID: "m@1-2", dimension: 3)
        try cache.add(id: "a", vector: [1, 0, 0], textHash: EmbeddingCache.textHash("apple"))
        try cache.add(id: "b", vector: [0, 1, 0], textHash: EmbeddingCache.textHash("banana"))
        try cache.add(id: "x", vector: [0, 0, 1], textHash: 0)
        try cache.save(to: dir.path("c.emb"))
        let loaded = try EmbeddingCache.load(path: dir.path("c.emb"))
        #expect(loaded.modelID == "m@1-2" && loaded.items == ["a", "b", "x"] && loaded.dimension == 3)
        #expect(Array(loaded.vector(for: "b")!) == [0, 1, 0])
        #expect(!loaded.needsEmbedding(id: "a", text: "apple"))
        #expect(loaded.needsEmbedding(id: "a", text: "apple pie"))   // text changed
        #expect(loaded.needsEmbedding(id: "c", text: "cherry"))      // new
        #expect(!loaded.needsEmbedding(id: "x", text: "anything"))   // imported: text unknown, kept
        try loaded.add(id: "a", vector: [0.5, 0.5, 0], textHash: EmbeddingCache.textHash("apple pie"))
        #expect(loaded.count == 3 && Array(loaded.vector(for: "a")!) == [0.5, 0.5, 0])
        #expect(throws: ModelError.self) { try loaded.add(id: "d", vector: [1, 2], textHash: 1) }
    }

    @Test func aRerunEmbedsOnlyNewOrChangedItems() throws {
        let dir = try TemporaryDirectory()
        var calls: [[String]] = []
        let fake: ([String]) -> [[Float]] = { texts in
            calls.append(texts)
            return texts.map { t in [Float(t.count), 1] }
        }
        let first = EmbeddingCache(modelID: "fake", dimension: 2)
        #expect(try first.update([("1", "apple"), ("2", "banana"), ("3", "cherry")], chunk: 2, embed: fake) == 3)
        #expect(calls == [["apple", "banana"], ["cherry"]])
        try first.save(to: dir.path("c.emb"))
        calls = []
        let again = try EmbeddingCache.load(path: dir.path("c.emb"))
        #expect(try again.update([("1", "apple"), ("2", "banana"), ("3", "cherry")], embed: fake) == 0)
        #expect(calls.isEmpty)
        #expect(try again.update([("1", "apple"), ("2", "banana split"), ("3", "cherry"), ("4", "date")], embed: fake) == 2)
        #expect(calls == [["banana split", "date"]])
        #expect(again.count == 4 && Array(again.vector(for: "2")!) == [12, 1])
    }

    @Test func refusesAForeignOrCorruptFile() throws {
        let dir = try TemporaryDirectory()
        let cache = EmbeddingCache(modelID: "m", dimension: 2)
        try cache.add(id: "a", vector: [1, 0], textHash: 1)
        try cache.save(to: dir.path("c.emb"))
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.path("c.emb"))))
        bytes[bytes.count - 12] ^= 0xff
        try Data(bytes).write(to: URL(fileURLWithPath: dir.path("bad.emb")))
        #expect(throws: ModelError.self) { try EmbeddingCache.load(path: dir.path("bad.emb")) }
        try TransitionModel.train(sequences: [["a", "b", "c"]], config: TransitionConfig()).save(to: dir.path("t.snap"))
        #expect(throws: ModelError.self) { try EmbeddingCache.load(path: dir.path("t.snap")) }
    }

    @Test func importsTSVAndNPY() throws {
        let dir = try TemporaryDirectory()
        let tsv = try dir.file("v.tsv", "a\t1 2 3\nb\t4,5,6\n")
        #expect(try EmbeddingCache.parseTSV(path: tsv).map(\.vector) == [[1, 2, 3], [4, 5, 6]])
        // A hand-made .npy v1.0: '<f4', C order, shape (2, 2).
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)] + Array(header.utf8)
        for f: Float in [1, 2, 3, 4] { withUnsafeBytes(of: f.bitPattern.littleEndian) { bytes += $0 } }
        try Data(bytes).write(to: URL(fileURLWithPath: dir.path("v.npy")))
        let ids = try dir.file("ids.txt", "p\nq\n")
        let rows = try EmbeddingCache.parseNPY(path: dir.path("v.npy"), idsPath: ids)
        #expect(rows.map(\.id) == ["p", "q"] && rows.map(\.vector) == [[1, 2], [3, 4]])
    }
}

@Suite struct LLMSeqSimTests {
    @Test func ranksTheSessionsClusterFirstAndScoresAreCosines() throws {
        let cache = try clusteredCache(clusters: 3, perCluster: 5)
        let sim = LLMSeqSim.build(cache: cache)
        let rowOf = Dictionary(uniqueKeysWithValues: sim.items.enumerated().map { ($1, Int32($0)) })
        var scores = [Float](repeating: 0, count: 2 * sim.items.count)
        sim.scoreAll(histories: [[rowOf["c1-0"]!, rowOf["c1-1"]!], [rowOf["c2-3"]!]], into: &scores)
        let v = sim.items.count
        let top0 = TopK.select(Array(scores[0..<v]), k: 5).map { sim.items[$0.id] }
        let top1 = TopK.select(Array(scores[v..<(2 * v)]), k: 5).map { sim.items[$0.id] }
        #expect(top0.allSatisfy { $0.hasPrefix("c1-") })
        #expect(top1.allSatisfy { $0.hasPrefix("c2-") })
        #expect(scores.allSatisfy { $0 <= 1.0001 && $0 >= -1.0001 })
        // Batched and one-at-a-time agree (sgemm vs sgemv).
        var single = [Float](repeating: 0, count: v)
        sim.scoreAll(histories: [[rowOf["c2-3"]!]], into: &single)
        #expect(zip(single, scores[v...]).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func decayFavoursTheNewestItem() throws {
        let cache = try clusteredCache(clusters: 2, perCluster: 4)
        let history = ["c0-0", "c0-1", "c1-0"]
        for (aggregation, expectCluster) in [(LLMSeqSimConfig.Aggregation.mean, "c0-"), (.decay, "c1-")] {
            let sim = LLMSeqSim.build(cache: cache, config: .init(aggregation: aggregation, halfLife: 0.5))
            let rows = history.map { Int32(sim.items.firstIndex(of: $0)!) }
            var scores = [Float](repeating: 0, count: sim.items.count)
            sim.scoreAll(histories: [rows], into: &scores)
            for r in rows { scores[Int(r)] = -.infinity }
            #expect(sim.items[TopK.select(scores, k: 1)[0].id].hasPrefix(expectCluster), "\(aggregation)")
        }
    }

    @Test func snapshotRoundTripAndServingWithNewItems() throws {
        let dir = try TemporaryDirectory()
        let cache = try clusteredCache(clusters: 3, perCluster: 4)
        let sim = LLMSeqSim.build(cache: cache, items: cache.items.filter { $0 != "c1-3" })
        try sim.save(to: dir.path("s.snap"))
        let loaded = try LLMSeqSim.load(try Snapshot.read(path: dir.path("s.snap")))
        #expect(loaded.items == sim.items && loaded.version == sim.version)
        #expect(try loadScorer(snapshot: try Snapshot.read(path: dir.path("s.snap"))) is LLMSeqSim)
        let vocabulary = TestVocabulary()
        let recommender = loaded.bind { vocabulary.id($0) }
        let session = ["c1-0", "c1-1"].map { vocabulary.id($0) }
        func ask(_ history: [ItemID]) -> [String] {
            vocabulary.names(recommender.recommend([RecommendationRequest(user: "u", history: history, k: 3, exclude: Set(history))])[0])
        }
        #expect(!ask(session).contains("c1-3"))
        // Cold-start: the missing item arrives with its text vector and is ranked at once.
        let newID = vocabulary.id("c1-3")
        #expect(!recommender.knows(newID))
        recommender.addItems([(newID, "c1-3", Array(cache.vector(for: "c1-3")!))])
        #expect(recommender.knows(newID))
        #expect(ask(session).contains("c1-3"))
        // Unknown items in a session are skipped; a session of only unknown items gets no answer, not a crash.
        #expect(ask([vocabulary.id("never-seen")]).isEmpty)
        #expect(ask([vocabulary.id("never-seen")] + session).count == 3)
    }
}

@Suite struct TextProjectionTests {
    @Test func pcaFindsTheDominantDirections() {
        // Data with variances 9, 4, 1, 0.01... along known orthogonal axes (a rotation of e_i).
        var rng = RandomSource(seed: 11)
        let D = 6, n = 4000
        let sd: [Float] = [3, 2, 1, 0.1, 0.1, 0.1]
        var rows = [Float](repeating: 0, count: n * D)
        for r in 0..<n { for j in 0..<D { rows[r * D + j] = sd[j] * rng.normal() + Float(j) } }
        let (mean, components, eigen) = TextProjection.principalComponents(rows, dimension: D, width: 3)
        #expect(zip(mean, [0, 1, 2, 3, 4, 5] as [Float]).allSatisfy { abs($0 - $1) < 0.2 })
        for k in 0..<3 {
            #expect(abs(abs(components[k * 3 + k]) - 1) < 0.02, "component \(k) should be axis \(k)")
            #expect(abs(eigen[k] - sd[k] * sd[k]) / (sd[k] * sd[k]) < 0.1)
        }
        // Orthonormal columns.
        for a in 0..<3 { for b in 0..<3 {
            var dot: Float = 0
            for i in 0..<D { dot += components[i * 3 + a] * components[i * 3 + b] }
            #expect(abs(dot - (a == b ? 1 : 0)) < 1e-4)
        } }
    }

    @Test func llm2sasrecInitialisesFromTextAndKeepsTheProjection() throws {
        let dir = try TemporaryDirectory()
        let cache = try clusteredCache(clusters: 4, perCluster: 10, dimension: 24)
        var items = cache.items
        items.append("no-text")
        var config = SASRecConfig()
        config.width = 8; config.maxLength = 6
        let model = SASRec(config: config, items: items)
        let before = model.store.floats("item_embedding")
        let (projection, rows) = try TextProjection.initialize(table: model.store["item_embedding"].data, items: items, width: config.width,
                                                               widthKey: "width", from: cache)
        model.textProjection = projection
        #expect(rows == Array(0..<cache.count))
        let after = model.store.floats("item_embedding")
        let d = config.width, last = items.count - 1
        #expect(Array(after[(last * d)...]) == Array(before[(last * d)...]))   // no text: random init kept
        // Magnitude: per-element RMS of the text rows equals the Xavier std of the table.
        let textPart = after[0..<(cache.count * d)]
        let rms = (textPart.map { $0 * $0 }.reduce(0, +) / Float(textPart.count)).squareRoot()
        let xavier = (2 / Float(items.count + d)).squareRoot()
        #expect(abs(rms - xavier) / xavier < 0.05)
        // Same-cluster items end up closer than other-cluster items.
        func dot(_ a: Int, _ b: Int) -> Float { (0..<d).reduce(0) { $0 + after[a * d + $1] * after[b * d + $1] } }
        #expect(dot(0, 1) > dot(0, 15))
        // The projection reproduces the rows and survives the snapshot.
        let projected = model.textProjection!.project(Array(cache.vector(for: items[3])!))
        #expect(zip(projected, after[(3 * d)..<(4 * d)]).allSatisfy { abs($0 - $1) < 1e-4 })
        try model.save(to: dir.path("m.snap"))
        let loaded = try SASRec.load(path: dir.path("m.snap"))
        #expect(loaded.textProjection == model.textProjection)
        // Serving: a new item projected through it becomes a candidate; unknown ones are ignored.
        let vocabulary = TestVocabulary()
        let recommender = loaded.bind { vocabulary.id($0) }
        let newID = vocabulary.id("new-item")
        recommender.addItems([(newID, "new-item", Array(cache.vector(for: "c0-0")!))])
        #expect(recommender.knows(newID))
        let answer = recommender.recommend([RecommendationRequest(user: "u", history: [vocabulary.id("c0-1"), vocabulary.id("unknown")], k: items.count + 1, exclude: [])])[0]
        #expect(answer.contains { $0.item == newID } && answer.count == items.count + 1)
    }
}

/// text_anchor (L2-SP toward the text start) for LLM2SASRec and LLM2BERT4Rec.
@Suite struct TextAnchorTests {
    /// The gradient it adds is its penalty's (central differences in double), on the anchored
    /// rows only.
    @Test func gradientIsThePenaltys() {
        let store = ParameterStore([("t", [5, 3])])
        let t = store["t"]
        var rng = RandomSource(seed: 4)
        for i in 0..<15 { t.data[i] = rng.normal() }
        let anchor = TextAnchor(table: t, rows: [0, 2, 3], width: 3, strength: 0.7)
        #expect(anchor.penalty(t) == 0)
        for i in 0..<15 { t.data[i] *= 3 }
        #expect(abs(anchor.scale(t) - 3) < 1e-5 && anchor.penalty(t) < 1e-9)   // a common scale is free
        for i in 0..<15 { t.data[i] += 0.3 * rng.normal() }
        anchor.addGradient(to: t)
        for i in 0..<15 {
            let x = t.data[i], h: Float = 1e-2
            t.data[i] = x + h; let up = anchor.penalty(t)
            t.data[i] = x - h; let down = anchor.penalty(t)
            t.data[i] = x
            let numeric = (up - down) / Double(2 * h)
            #expect(abs(numeric - Double(t.grad[i])) < 2e-3 * max(1, abs(numeric)), "element \(i)")
            if [1, 4].contains(i / 3) { #expect(t.grad[i] == 0) }
        }
    }

    /// Trained with a strong anchor, the text-started rows stay nearer their start (up to a
    /// common scale) than without one; a plain model asked for an anchor is told to use the llm2 kind.
    @Test(arguments: ["llm2sasrec", "llm2bert4rec"])
    func holdsTextRowsNearTheirStart(kind: String) throws {
        let dir = try TemporaryDirectory()
        let cache = EmbeddingCache(modelID: "test@0-0", dimension: 24)
        var rng = RandomSource(seed: 2)
        for i in 0..<30 { try cache.add(id: "i\(i)", vector: (0..<24).map { _ in rng.normal() }, textHash: 0) }
        try cache.save(to: dir.path("v.cache"))
        var job = TrainingJob(kind: kind, dataset: CatalogueTests.walks(), holdout: .loo, source: "walks")
        job.embeddings = dir.path("v.cache")
        func drift(_ anchor: String) throws -> Float {
            let settings = ["width": "16", "heads": "2", "max_length": "12", "epochs": "3", "batch_size": "8", "text_anchor": anchor]
            let model = try ModelCatalogue.standard.train(job, settings: settings).model
            let (table, items, projection): ([Float], [String], TextProjection) = try {
                if let m = model as? SASRec { return (m.store.floats("item_embedding"), m.items, try #require(m.textProjection)) }
                let m = try #require(model as? BERT4Rec)
                return (m.store.floats("item_embedding"), m.items, try #require(m.textProjection))
            }()
            // Distance from the start up to the best common scale (the anchor's own measure).
            var starts: [Float] = []
            for item in items { starts += projection.project(Array(cache.vector(for: item)!)) }
            let ea = zip(table, starts).reduce(0) { $0 + $1.0 * $1.1 }, aa = starts.reduce(0) { $0 + $1 * $1 }
            let sum = zip(table, starts).reduce(Float(0)) { $0 + ($1.0 - ea / aa * $1.1) * ($1.0 - ea / aa * $1.1) }
            return sum
        }
        let free = try drift("0"), held = try drift("1000")
        #expect(held < 0.2 * free, "anchored drift \(held), free \(free)")
        job.kind = String(kind.dropFirst(4))
        let error = modelError { _ = try ModelCatalogue.standard.train(job, settings: ["text_anchor": "1", "epochs": "1"]) }
        #expect(error?.message.contains(kind) == true && error?.message.contains("text_anchor") == true)
    }
}
