import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

/// The catalogue: one list of models, one serving adapter, settings kept once, and snapshots
/// written before the catalogue still loading and scoring as they did.
@Suite struct CatalogueTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/v1")

    /// Walks through 30 items: each user steps forward by 1-3 items.
    static func walks(users: Int = 60, seed: UInt64 = 9) -> SequenceDataset {
        var rng = RandomSource(seed: seed)
        return SequenceDataset(sequences: (0..<users).map { u in
            var item = rng.below(30)
            return ("u\(u)", (0..<(6 + rng.below(6))).map { _ in
                defer { item = (item + 1 + rng.below(3)) % 30 }
                return "i\(item)"
            })
        }, source: "walks")
    }

    static let tiny: [String: [String: String]] = [
        "sasrec": ["width": "8", "blocks": "1", "max_length": "10", "epochs": "1", "eval_every": "1", "batch_size": "16"],
        "diffurec": ["width": "8", "blocks": "1", "heads": "2", "max_length": "10", "epochs": "1", "eval_every": "1", "batch_size": "64",
                     "steps": "4", "sample_steps": "2"],
        "bert4rec": ["width": "8", "heads": "2", "blocks": "1", "max_length": "10", "epochs": "1", "eval_every": "1", "batch_size": "16"],
    ]

    /// Every catalogue model (and the test model), trained small through the catalogue, saved,
    /// loaded back and bound to one vocabulary.
    func everyModel(_ dir: TemporaryDirectory, coldUsers: ColdUserPolicy) throws -> [(String, CatalogueRecommender)] {
        let catalogue = ModelCatalogue.standard.adding(CatalogueEntry(BigramFamily.self))
        let dataset = Self.walks()
        let cache = EmbeddingCache(modelID: "test@0-0", dimension: 16)
        var rng = RandomSource(seed: 1)
        for i in 0..<30 { try cache.add(id: "i\(i)", vector: (0..<16).map { _ in rng.normal() }, textHash: 0) }
        try cache.save(to: dir.path("vectors.cache"))
        var out: [(String, CatalogueRecommender)] = []
        for entry in catalogue.entries {
            for kind in entry.trainKinds {
                var job = TrainingJob(kind: kind, dataset: dataset, holdout: .loo, source: "walks")
                job.embeddings = dir.path("vectors.cache")
                let result = try catalogue.train(job, settings: Self.tiny[entry.name] ?? [:])
                let path = dir.path("\(kind).snap")
                try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: path)
                let loaded = try catalogue.load(path: path)
                #expect(loaded.model.kind == ["llm2sasrec": "sasrec", "llm2bert4rec": "bert4rec"][kind, default: kind])
                out.append((kind, CatalogueRecommender(loaded, options: ServingOptions(coldUsers: coldUsers)) { ItemID(Int($0.dropFirst())! + 1) }))
            }
        }
        return out
    }

    @Test func everyModelAnswersAColdUserWithTheSamePolicy() throws {
        let dir = try TemporaryDirectory()
        let models = try everyModel(dir, coldUsers: .popularity)
        #expect(Set(models.map(\.0)).isSuperset(of: ["transition", "sasrec", "llm2sasrec", "diffurec", "diffurecsys-v1", "diffurecsys-v2", "llmseqsim", "bert4rec", "llm2bert4rec", "bigram"]))
        // The training data's most popular items, minus what the request excludes.
        let counts = ModelCatalogue.popularity(of: (0..<30).map { "i\($0)" }, in: Self.walks().leaveOneOut().train)
        // Ties: the smaller external id ("i10" < "i9"), whatever order a model keeps its rows in.
        let ranked = (0..<30).sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && "i\($0)" < "i\($1)") }.map { ItemID($0 + 1) }
        let exclude: Set<ItemID> = [ranked[0]]
        let cold = [RecommendationRequest(user: "new", history: [], k: 5, exclude: exclude),
                    RecommendationRequest(user: "unknown-items", history: [900, 901], k: 5, exclude: exclude)]
        for (kind, recommender) in models {
            let answers = recommender.recommend(cold)
            for answer in answers {
                #expect(answer.map(\.item) == Array(ranked.filter { !exclude.contains($0) }.prefix(5)), "\(kind)")
                #expect(zip(answer, answer.dropFirst()).allSatisfy { $0.score >= $1.score }, "\(kind)")
            }
            // A warm user gets the model's own answer, never an excluded or seen item.
            let warm = recommender.recommend([RecommendationRequest(user: "w", history: [3, 4], k: 5, exclude: [3, 4])])[0]
            #expect(warm.count == 5 && warm.allSatisfy { $0.item != 3 && $0.item != 4 && $0.item != 0 }, "\(kind)")
        }
        for (kind, recommender) in try everyModel(dir, coldUsers: .none) {
            #expect(recommender.recommend(cold).allSatisfy { $0.isEmpty }, "\(kind)")
        }
    }

    @Test func theAdapterNeverAnswersAZeroOrDuplicateID() throws {
        let dir = try TemporaryDirectory()
        let dataset = Self.walks()
        for kind in ["transition", "sasrec", "bigram"] {
            let catalogue = ModelCatalogue.standard.adding(CatalogueEntry(BigramFamily.self))
            let job = TrainingJob(kind: kind, dataset: dataset, holdout: .none, source: "walks")
            let result = try catalogue.train(job, settings: Self.tiny[catalogue.trainer(for: kind).name] ?? [:])
            try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: dir.path("m.snap"))
            // A broken vocabulary: i0 maps to 0, and i1 and i2 share an id.
            let recommender = CatalogueRecommender(try catalogue.load(path: dir.path("m.snap"))) { item in
                item == "i0" ? 0 : item == "i2" ? 2 : ItemID(Int(item.dropFirst())! + 1)
            }
            for history: [ItemID] in [[], [5], [2, 3], [29, 30]] {
                let answer = recommender.recommend([RecommendationRequest(user: "u", history: history, k: 30, exclude: [])])[0]
                #expect(!answer.contains { $0.item == 0 }, "\(kind)")
                #expect(Set(answer.map(\.item)).count == answer.count, "\(kind)")
            }
        }
    }

    @Test func aModelIsOneFileAndOneCatalogueLine() throws {
        let dir = try TemporaryDirectory()
        let catalogue = ModelCatalogue.standard.adding(CatalogueEntry(BigramFamily.self))
        let dataset = Self.walks()
        let job = TrainingJob(kind: "bigram", dataset: dataset, holdout: .loo, source: "walks")
        let result = try catalogue.train(job, settings: ["smoothing": "0.5"])
        try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: dir.path("b.snap"))
        let loaded = try catalogue.load(path: dir.path("b.snap"))
        #expect((loaded.model as? BigramModel)?.settings.smoothing == 0.5)
        // Evaluated like any model: walks make the next item predictable from the last.
        let split = dataset.leaveOneOut()
        let report = FullRankingEvaluator().evaluate(scorer: try loadScorer(snapshot: Snapshot.read(path: dir.path("b.snap")), catalogue: catalogue),
                                                     cases: split.cases(for: .test), trainingSequences: split.train, catalogItemCount: 30,
                                                     model: ModelDescriptor(name: "bigram", version: ""), dataset: "walks", split: "test")
        #expect((report.historyExcluded.cutoff(10)?.hitRate ?? 0) > 0.8)
        // The standard catalogue does not know it, and says which kinds it knows.
        let error = modelError { _ = try ModelCatalogue.standard.load(path: dir.path("b.snap")) }
        #expect(error?.code == .unsupported && error?.message.contains("bigram") == true && error?.message.contains("sasrec, diffurec") == true)
        #expect(modelError { _ = try catalogue.trainer(for: "gpt") }?.message.contains("known: transition, sasrec, llm2sasrec") == true)
        // A bad setting names its key.
        #expect(throws: SettingError.self) { _ = try catalogue.train(job, settings: ["smoothing": "-1"]) }
    }

    @Test func settingsMissingFromAnOlderSnapshotTakeTheirDefaults() throws {
        var old = SASRecConfig().hyperParameters
        old.removeValue(forKey: "clip_norm")
        old.removeValue(forKey: "train_windows")
        old["width"] = "16"
        let decoded = try SASRecConfig(hyperParameters: old, path: "old.snap")
        #expect(decoded.width == 16 && decoded.clipNorm == 0 && decoded.trainWindows == 1)
        #expect(modelError { _ = try SASRecConfig(hyperParameters: ["width": "16", "heads": "3"], path: "bad.snap") }?.message.contains("multiple of heads") == true)
        #expect(modelError { _ = try DiffuRecConfig(hyperParameters: ["schedule": "quadratic"], path: "bad.snap") }?.message.contains("trunc_lin") == true)
        // Flag spellings and aliases name the same key.
        var s = SASRecConfig()
        try s.set("max-length", "50")
        try s.set("lr", "0.01")
        #expect(s.maxLength == 50 && s.learningRate == 0.01)
        #expect(throws: SettingError.self) { try s.set("width", "wide") }
    }

    /// Snapshots written by the build before the catalogue (Tests/Fixtures/v1, with the
    /// `streamrec evaluate` reports that build wrote) load and rank exactly as they did.
    @Test(arguments: ["sasrec", "diffurec", "transition"])
    func v1SnapshotsLoadAndEvaluateAsBefore(kind: String) throws {
        let snapshot = try Snapshot.read(path: Self.fixtures.appendingPathComponent("\(kind).snap").path)
        #expect(snapshot.manifest.kind == kind && snapshot.tensor(named: ModelCatalogue.popularityTensor) == nil)
        let loaded = try ModelCatalogue.standard.load(snapshot)
        let dataset = try SequenceDataset.load(path: Self.fixtures.appendingPathComponent("sequences.txt").path)
        let split = dataset.leaveOneOut()
        let report = FullRankingEvaluator().evaluate(scorer: loaded.model, cases: split.cases(for: .test), trainingSequences: split.train,
                                                     catalogItemCount: 30, model: ModelDescriptor(name: kind, version: ""), dataset: "v1", split: "test")
        let before = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixtures.appendingPathComponent("\(kind).eval.json"))) as! [String: Any]
        let cutoffs = (before["historyExcluded"] as! [String: Any])["cutoffs"] as! [[String: Any]]
        for cutoff in cutoffs {
            let k = cutoff["k"] as! Int
            let now = try #require(report.historyExcluded.cutoff(k))
            #expect(abs(now.ndcg - (cutoff["ndcg"] as! Double)) < 1e-9 && abs(now.hitRate - (cutoff["hitRate"] as! Double)) < 1e-9, "\(kind) @\(k)")
        }
        // Old snapshots have no item_popularity: the transition model serves cold users from its
        // own; the others have none to give.
        #expect((loaded.popularity != nil) == (kind == "transition"))
    }
}
