import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

@Suite struct BERT4RecTests {
    static func small(_ maxLength: Int = 12) -> BERT4RecConfig {
        var c = BERT4RecConfig()
        c.width = 16; c.blocks = 2; c.heads = 2; c.maxLength = maxLength; c.batchSize = 16; c.epochs = 1; c.evalEvery = 1
        return c
    }

    static func randomModel() -> BERT4Rec {
        let model = BERT4Rec(config: small(), items: (0..<30).map { "i\($0)" })
        var rng = RandomSource(seed: 3)
        for i in 0..<model.store.count { model.store.values[i] += 0.05 * rng.normal() }
        return model
    }

    /// The final block at the [mask] alone (serving and evaluation) equals the full bidirectional
    /// pass's last rows.
    @Test func theMaskPositionAloneEqualsTheFullPass() {
        let model = Self.randomModel()
        let windows: [[Int32]] = [[1, 2, 3, model.maskRow], [7, model.maskRow], [9, 8, 7, 6, 5, 4, 3, model.maskRow]]
        let layout = SequenceLayout(lengths: windows.map(\.count))
        let tape = Tape(recording: false, training: false)
        let fast = model.hidden(tape, ids: windows.flatMap { $0 }, layout: layout, lastOnly: true).values
        let full = tape.gather(model.hidden(tape, ids: windows.flatMap { $0 }, layout: layout), layout.lastRows).values
        #expect(fast.count == 3 * 16 && zip(fast, full).allSatisfy { abs($0 - $1) < 1e-5 })
        // Bidirectional: an earlier position's state depends on what comes after it.
        let a = model.hidden(tape, ids: [1, 2, 3], layout: SequenceLayout(lengths: [3])).values
        let b = model.hidden(tape, ids: [1, 2, 9], layout: SequenceLayout(lengths: [3])).values
        #expect(zip(a.prefix(16), b.prefix(16)).contains { abs($0 - $1) > 1e-4 })
    }

    @Test func clozeMasksAtLeastOnePositionAndKeepsTheTargets() {
        var c = Self.small()
        c.maskProb = 0.3
        let model = BERT4Rec(config: c, items: (0..<30).map { "i\($0)" })
        let trainer = BERT4RecTrainer(model: model)
        let windows: [[Int32]] = (0..<400).map { w in (0..<10).map { Int32(($0 + w) % 30) } }
        let (ids, rows, targets) = trainer.mask(windows)
        #expect(ids.count == 4000 && rows.count == targets.count)
        for (row, target) in zip(rows, targets) {
            #expect(ids[Int(row)] == model.maskRow && windows[Int(row) / 10][Int(row) % 10] == target)
        }
        for w in 0..<400 { #expect(rows.contains { Int($0) / 10 == w }, "window \(w) has a masked position") }
        let fraction = Double(rows.count) / 4000
        #expect(abs(fraction - 0.3) < 0.03, "masked \(fraction)")
    }

    /// Walks (each user steps forward by 1-3 items) make the next item predictable: the Cloze
    /// task learns it, and a snapshot ranks exactly as the model it was written from.
    @Test func learnsWalksAndRoundTripsThroughASnapshot() throws {
        let dir = try TemporaryDirectory()
        var c = Self.small()
        c.epochs = 30; c.evalEvery = 30; c.learningRate = 3e-3; c.dropout = 0.1
        let dataset = CatalogueTests.walks(users: 120)
        let split = EncodedSplit(dataset)
        let model = BERT4Rec(config: c, items: split.items)
        let trainer = BERT4RecTrainer(model: model)
        let before = trainer.history
        try trainer.fit(split)
        #expect(before.isEmpty && trainer.history.count == 30)
        #expect(trainer.history.last!.loss < trainer.history.first!.loss * 0.8)
        #expect(trainer.bestNDCG > 0.25, "validation NDCG@10 \(trainer.bestNDCG)")
        try ModelCatalogue.save(model, trainingSequences: dataset.sequences.map(\.items), to: dir.path("b.snap"))
        let loaded = try ModelCatalogue.standard.load(path: dir.path("b.snap"))
        #expect(loaded.model.kind == "bert4rec" && loaded.popularity != nil)
        let histories: [[Int32]] = [[1, 2, 3], [], [29, 0, 28]]
        var a = [Float](repeating: 0, count: 3 * 30), b = a
        a.withUnsafeMutableBufferPointer { model.scoreAll(histories: histories, into: $0.baseAddress!) }
        b.withUnsafeMutableBufferPointer { loaded.model.scoreAll(histories: histories, into: $0.baseAddress!) }
        #expect(a == b && a[30..<60].allSatisfy { $0 == 0 })
    }

    @Test func aCorruptOrForeignSnapshotIsRefused() throws {
        let dir = try TemporaryDirectory()
        let model = Self.randomModel()
        try ModelCatalogue.save(model, trainingSequences: nil, to: dir.path("b.snap"))
        var bytes = try Data(contentsOf: URL(fileURLWithPath: dir.path("b.snap")))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: dir.path("flipped.snap")))
        #expect(modelError { _ = try ModelCatalogue.standard.load(path: dir.path("flipped.snap")) }?.message.contains("checksum") == true)
        // A NaN weight written by a buggy trainer: the file is intact, the model is not.
        model.store.values[5] = .nan
        try ModelCatalogue.save(model, trainingSequences: nil, to: dir.path("nan.snap"))
        #expect(modelError { _ = try ModelCatalogue.standard.load(path: dir.path("nan.snap")) }?.message.contains("NaN") == true)
        // A SASRec snapshot is not a BERT4Rec one.
        try SASRec(config: SASRecConfig(), items: ["a", "b"]).save(to: dir.path("s.snap"))
        #expect(modelError { _ = try BERT4Rec.load(try Snapshot.read(path: dir.path("s.snap"))) }?.code == .badSnapshot)
    }

    /// LLM2BERT4Rec: the item rows start from the text vectors' PCA (the [mask] row does not), and
    /// items that arrive later are rankable at once through the same projection.
    @Test func llm2bert4recStartsFromTextAndRanksNewItems() throws {
        let dir = try TemporaryDirectory()
        let cache = EmbeddingCache(modelID: "test@0-0", dimension: 24)
        var rng = RandomSource(seed: 2)
        for i in 0..<30 { try cache.add(id: "i\(i)", vector: (0..<24).map { _ in rng.normal() }, textHash: 0) }
        try cache.save(to: dir.path("v.cache"))
        var job = TrainingJob(kind: "llm2bert4rec", dataset: CatalogueTests.walks(), holdout: .loo, source: "walks")
        job.embeddings = dir.path("v.cache")
        let result = try ModelCatalogue.standard.train(job, settings: ["width": "16", "max_length": "12", "epochs": "1", "batch_size": "16"])
        let model = try #require(result.model as? BERT4Rec)
        #expect(model.textProjection != nil && result.reportSettings["init"]?.hasPrefix("llm2bert4rec") == true)
        try ModelCatalogue.save(model, trainingSequences: job.trainingSequences, to: dir.path("l.snap"))
        let loaded = try ModelCatalogue.standard.load(path: dir.path("l.snap"))
        #expect((loaded.model as? BERT4Rec)?.textProjection == model.textProjection)
        let recommender = CatalogueRecommender(loaded) { ItemID(Int($0.dropFirst())! + 1) }
        #expect(recommender.textDimension == 24 && !recommender.knows(100))
        recommender.addItems([(id: 100, external: "new", textVector: (0..<24).map { _ in rng.normal() })])
        #expect(recommender.knows(100))
        let all = recommender.recommend([RecommendationRequest(user: "u", history: [3, 4], k: 100, exclude: [])])[0]
        #expect(all.contains { $0.item == 100 } && all.count == 31)
    }
}
