import Foundation
import Testing
@testable import StreamRecModels

/// Gives every session the same scores: a scorer whose ranks can be worked out by hand.
struct FixedScorer: CatalogScorer {
    let items: [String]
    let scores: [Float]

    func scoreAll(histories: [[Int32]], into out: UnsafeMutablePointer<Float>) {
        for h in histories.indices {
            for (row, score) in scores.enumerated() { out[h * items.count + row] = score }
        }
    }
}

/// Scores that depend on the history (with many ties), and a record of the largest batch seen.
final class HistoryDependentScorer: CatalogScorer, @unchecked Sendable {
    let items: [String]
    private(set) var largestBatch = 0

    init(itemCount: Int) { items = (0..<itemCount).map { "i\($0)" } }

    func scoreAll(histories: [[Int32]], into out: UnsafeMutablePointer<Float>) {
        largestBatch = max(largestBatch, histories.count)
        for (h, history) in histories.enumerated() {
            let key = history.reduce(7) { ($0 * 31 + Int($1)) % 1009 }
            for row in items.indices { out[h * items.count + row] = Float((key * 13 + row * 17) % 23) }
        }
    }
}

@Suite struct EvaluationTests {
    // Rows a0 ... h7. Scores: a 8, b 7, c 7 (ties with b, loses on row), d 6, e 5, f 4, g 3, h 2,
    // so the full ranking is a b c d e f g h for every session.
    static let scorer = FixedScorer(items: ["a", "b", "c", "d", "e", "f", "g", "h"], scores: [8, 7, 7, 6, 5, 4, 3, 2])
    // Training popularity h 5, g 4, d 3, b 2, then a c e f with 1 each (first seen first):
    // top 5 popular = h g d b a; top 10 and 20 = all eight; head = ceil(0.2 * 8) = 2 items: h, g.
    static let training = [["h", "h", "h", "h", "h", "g", "g", "g", "g"], ["d", "d", "d", "b", "b", "a", "c", "e", "f"]]
    static let cases = [
        EvaluationCase(history: ["a"], target: "b"),                          // all 2, excluded 1
        EvaluationCase(history: ["b", "c", "a"], target: "d"),                // all 4, excluded 1
        EvaluationCase(history: ["d", "e"], target: "d"),                     // target in history: 4 and 4
        EvaluationCase(history: ["zz", "a", "b", "c", "d", "e"], target: "h"), // zz dropped; all 8, excluded 3
        EvaluationCase(history: [], target: "unknown"),                      // miss under both
        EvaluationCase(history: ["g"], target: "c"),                          // all 3, excluded 3
    ]

    static func report(batchSize: Int = 256) -> EvaluationReport {
        FullRankingEvaluator(batchSize: batchSize).evaluate(
            scorer: scorer, cases: cases, trainingSequences: training, catalogItemCount: 10,
            model: ModelDescriptor(name: "fixed", version: "v1"), dataset: "synthetic", split: "test")
    }

    static func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) < 1e-12 }

    @Test func ranksUnderBothProtocols() {
        let ranked = FullRankingEvaluator(batchSize: 4).rank(scorer: Self.scorer, cases: Self.cases)
        #expect(ranked.map(\.rankAll) == [2, 4, 4, 8, nil, 3])
        #expect(ranked.map(\.rankHistoryExcluded) == [1, 1, 4, 3, nil, 3])
        #expect(ranked.map(\.historyLength) == [1, 3, 2, 6, 0, 1])
        let rows = { (names: String) in names.map { Int32(Self.scorer.items.firstIndex(of: String($0))!) } }
        #expect(ranked[0].topAll == rows("abcdefgh"))
        #expect(ranked[1].topHistoryExcluded == rows("defgh"))
        #expect(ranked[2].topHistoryExcluded == rows("abcdfgh"), "the target d stays even though it is in the history")
        #expect(ranked[3].topHistoryExcluded == rows("fgh"))
    }

    @Test func accuracyMetricsMatchHandComputedValues() {
        let report = Self.report()
        #expect(report.cases == 6 && report.unknownTargets == 1)
        #expect(report.modelItems == 8 && report.catalogItems == 10 && report.trainingItems == 8 && report.headItems == 2)
        let all = report.all, excluded = report.historyExcluded
        #expect(all.cutoffs.map(\.k) == [5, 10, 20])
        #expect(all.cutoffs.map(\.hits) == [4, 5, 5])
        #expect(excluded.cutoffs.map(\.hits) == [5, 5, 5])
        #expect(Self.close(all.cutoff(5)!.hitRate, 4.0 / 6) && Self.close(all.cutoff(10)!.hitRate, 5.0 / 6))
        let ndcg5 = (1 / log2(3.0) + 2 / log2(5.0) + 1 / log2(4.0)) / 6
        #expect(Self.close(all.cutoff(5)!.ndcg, ndcg5))
        #expect(Self.close(all.cutoff(10)!.ndcg, ndcg5 + 1 / log2(9.0) / 6))
        #expect(Self.close(excluded.cutoff(5)!.ndcg, (1 + 1 + 1 / log2(5.0) + 2 / log2(4.0)) / 6))
        // Reciprocal ranks: all 1/2 1/4 1/4 1/8 0 1/3; excluded 1 1 1/4 1/3 0 1/3.
        let mrrAll: Double = (0.5 + 0.25 + 0.25 + 0.125 + 1.0 / 3) / 6
        let mrrExcluded: Double = (2.25 + 2.0 / 3) / 6
        #expect(Self.close(all.mrr, mrrAll))
        #expect(Self.close(excluded.mrr, mrrExcluded))
    }

    @Test func coverageAndSerendipityMatchHandComputedValues() {
        let report = Self.report()
        // All: every list is a b c d e f g h. Excluded top 5s: bcdef, defgh, abcdf, fgh, abcde, abcde.
        #expect(report.all.cutoffs.map(\.coveredItems) == [5, 8, 8])
        #expect(report.historyExcluded.cutoffs.map(\.coveredItems) == [8, 8, 8])
        #expect(Self.close(report.all.cutoff(5)!.coverage, 0.5) && Self.close(report.all.cutoff(20)!.coverage, 0.8))
        // Hits within 5 whose target is not in the top-5 popular (h g d b a): only c (case 6), in both.
        #expect(Self.close(report.all.cutoff(5)!.serendipity, 1.0 / 6))
        #expect(Self.close(report.historyExcluded.cutoff(5)!.serendipity, 1.0 / 6))
        // At 10 every training item is "expected".
        #expect(report.all.cutoff(10)!.serendipity == 0 && report.historyExcluded.cutoff(20)!.serendipity == 0)
    }

    @Test func headTailAndLengthQuintilesMatchHandComputedValues() {
        let report = Self.report()
        let all = report.all, excluded = report.historyExcluded
        // Head = {h, g}: only case 4 (target h).
        #expect(all.head.cases == 1 && all.tail.cases == 5)
        #expect(all.head.hitRate == 1 && Self.close(all.head.ndcg, 1 / log2(9.0)))
        #expect(Self.close(excluded.head.ndcg, 0.5))
        #expect(Self.close(all.tail.hitRate, 4.0 / 5))
        #expect(Self.close(all.tail.ndcg, (1 / log2(3.0) + 2 / log2(5.0) + 0.5) / 5))
        // Lengths 1 3 2 6 0 1; sorted 0 1 1 2 3 6 gives upper bounds 1, 1, 2, 3.
        #expect(all.lengthQuintiles.map(\.cases) == [3, 0, 1, 1, 1])
        #expect(all.lengthQuintiles.map(\.minHistoryLength) == [0, nil, 2, 3, 6])
        #expect(all.lengthQuintiles.map(\.maxHistoryLength) == [1, nil, 2, 3, 6])
        #expect(Self.close(all.lengthQuintiles[0].hitRate, 2.0 / 3))
        #expect(Self.close(all.lengthQuintiles[0].ndcg, (1 / log2(3.0) + 0.5) / 3))
        #expect(all.lengthQuintiles[1].hitRate == 0)
        #expect(Self.close(all.lengthQuintiles[4].ndcg, 1 / log2(9.0)))
        #expect(Self.close(excluded.lengthQuintiles[3].ndcg, 1))
    }

    @Test func quintilesSpreadDistinctLengthsEvenly() {
        let quintile = FullRankingEvaluator.lengthQuintiles(Array(1...10).reversed())
        #expect(quintile == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0])
        #expect(FullRankingEvaluator.lengthQuintiles([5, 5, 5]) == [0, 0, 0])
        #expect(FullRankingEvaluator.lengthQuintiles([]).isEmpty)
    }

    @Test func batchSizeDoesNotChangeTheResults() {
        var random = Xoshiro256StarStar(seed: 5)
        let cases = (0..<37).map { _ in
            EvaluationCase(history: (0..<random.nextInt(below: 9)).map { _ in "i\(random.nextInt(below: 45))" },
                           target: "i\(random.nextInt(below: 45))")  // i40 ... i44 are unknown
        }
        let scorer = HistoryDependentScorer(itemCount: 40)
        let one = FullRankingEvaluator(batchSize: 1).rank(scorer: scorer, cases: cases)
        #expect(scorer.largestBatch == 1)
        let popularity = ItemPopularity(sequences: cases.map(\.history))
        let reference = FullRankingEvaluator.report(ranked: one, cases: cases, popularity: popularity, catalogItemCount: 45)
        for batchSize in [2, 8, 36, 37, 256] {
            let ranked = FullRankingEvaluator(batchSize: batchSize).rank(scorer: scorer, cases: cases)
            #expect(ranked == one, "batch \(batchSize)")
            #expect(FullRankingEvaluator.report(ranked: ranked, cases: cases, popularity: popularity, catalogItemCount: 45) == reference)
        }
        #expect(scorer.largestBatch == 37)
        #expect(reference.unknownTargets == cases.filter { Int($0.target.dropFirst())! >= 40 }.count)
        #expect(reference.unknownTargets > 0 && reference.all.cutoff(20)!.hits > 0, "the data exercises both paths")
    }

    @Test func ranksAgreeWithTopKLists() {
        var random = Xoshiro256StarStar(seed: 8)
        let cases = (0..<50).map { _ in
            EvaluationCase(history: (0..<random.nextInt(below: 6)).map { _ in "i\(random.nextInt(below: 30))" }, target: "i\(random.nextInt(below: 30))")
        }
        let scorer = HistoryDependentScorer(itemCount: 30)
        // The row listed at the target's rank is the target, under both protocols.
        for (testCase, outcome) in zip(cases, FullRankingEvaluator(batchSize: 7).rank(scorer: scorer, cases: cases)) {
            let target = Int32(scorer.items.firstIndex(of: testCase.target)!)
            if outcome.rankAll! <= outcome.topAll.count { #expect(outcome.topAll[outcome.rankAll! - 1] == target) }
            if outcome.rankHistoryExcluded! <= outcome.topHistoryExcluded.count {
                #expect(outcome.topHistoryExcluded[outcome.rankHistoryExcluded! - 1] == target)
            } else {
                #expect(!outcome.topHistoryExcluded.contains(target))
            }
        }
    }

    @Test func reportEncodesAndPrints() throws {
        let report = Self.report(batchSize: 4)
        let decoded = try JSONDecoder().decode(EvaluationReport.self, from: try report.json())
        #expect(decoded == report)
        let text = String(decoding: try report.json(), as: UTF8.self)
        #expect(text.contains("\"historyExcluded\"") && text.contains("\"unknownTargets\" : 1"))
        let table = report.table()
        #expect(table.contains("fixed v1 (8 items)"))
        let hr5 = table.split(separator: "\n").first { $0.hasPrefix("HR@5 ") }
        #expect(hr5.map { $0.split(separator: " ").suffix(2) == ["0.6667", "0.8333"] } == true, "\(hr5 ?? "no HR@5 line")")
        #expect(table.contains("len q1 0-1 (3 cases) HR@10"))
    }

    @Test func popularityScorerRanksLikeTheBaseline() {
        let sequences = [["x", "y", "z"], ["z", "y", "w"], ["y"]]
        let scorer = PopularityScorer(sequences: sequences)
        #expect(scorer.items == ["x", "y", "z", "w"])
        var scores = [Float](repeating: -1, count: 8)
        scores.withUnsafeMutableBufferPointer { scorer.scoreAll(histories: [[], [0, 3]], into: $0.baseAddress!) }
        #expect(scores == [1, 3, 2, 1, 1, 3, 2, 1])
        let vocabulary = TestVocabulary()
        for item in scorer.items { _ = vocabulary.id(item) }
        let baseline = PopularityRecommender(sequences: sequences, itemID: vocabulary.id)
        let answer = baseline.recommend([RecommendationRequest(user: "u", history: [], k: 4, exclude: [])])[0]
        let ranked = TopK.select(Array(scores[0..<4]), k: 4).map { scorer.items[$0.id] }
        #expect(vocabulary.names(answer) == ranked)
        #expect(ranked == ["y", "z", "x", "w"])
    }

    @Test func transitionScoresRankLikeItsRecommender() {
        let stream = SyntheticClickstream(config: .init(users: 60, clusters: 4, itemsPerCluster: 10, eventsPerUser: 15, seed: 3))
        let sequences = stream.sequences().map(\.items)
        let model = TransitionModel.train(sequences: sequences, config: TransitionConfig())
        let vocabulary = TestVocabulary()
        let recommender = model.bind(itemID: vocabulary.id)
        var random = Xoshiro256StarStar(seed: 4)
        let histories: [[Int32]] = [[]] + (0..<40).map { _ in
            (0..<(1 + random.nextInt(below: 8))).map { _ in Int32(random.nextInt(below: model.items.count)) }
        }
        var scores = [Float](repeating: 0, count: histories.count * model.items.count)
        scores.withUnsafeMutableBufferPointer { model.scoreAll(histories: histories, into: $0.baseAddress!) }
        var compared = 0
        for (h, history) in histories.enumerated() {
            let row = Array(scores[(h * model.items.count)..<((h + 1) * model.items.count)])
            #expect(row.allSatisfy { $0 > 0 && $0.isFinite })
            let ids = history.map { ItemID($0 + 1) }  // the vocabulary gave row r the id r + 1
            for (k, exclude) in [(5, Set<ItemID>()), (12, Set(ids)), (model.items.count, Set(ids))] {
                let expected = vocabulary.names(recommender.recommend([RecommendationRequest(user: "u", history: ids, k: k, exclude: exclude)])[0])
                var top = TopK(k: k)
                for (r, score) in row.enumerated() where !exclude.contains(ItemID(r + 1)) { top.insert(score: score, id: r) }
                // The same ranking up to ties: items of equal popularity are ordered by row here and
                // by external id in serving (the same for every model), so compare score by score.
                let scoreOf = Dictionary(uniqueKeysWithValues: model.items.enumerated().map { ($1, row[$0]) })
                #expect(expected.map { scoreOf[$0]! } == top.sorted().map(\.score), "history \(history), k \(k)")
                compared += 1
            }
        }
        #expect(compared == 123)
    }

    @Test func loadScorerDispatchesOnTheSnapshotKind() throws {
        let directory = try TemporaryDirectory()
        let model = TransitionModel.train(sequences: [["a", "b", "c"], ["b", "c", "d"]], config: TransitionConfig())
        try model.save(to: directory.path("t.snap"))
        let scorer = try loadScorer(snapshot: try Snapshot.read(path: directory.path("t.snap")))
        #expect(scorer is TransitionModel && scorer.items == ["a", "b", "c", "d"])

        var writer = SnapshotWriter(kind: "mystery", items: ["a"], hyperParameters: [:],
                                    training: .init(users: 1, items: 1, interactions: 1, source: "test"))
        try writer.add("w", floats: [1], shape: [1])
        try writer.write(to: directory.path("m.snap"))
        let error = modelError { _ = try loadScorer(snapshot: try Snapshot.read(path: directory.path("m.snap"))) }
        #expect(error?.code == .unsupported && error?.message.contains("mystery") == true)
    }

    @Test func leaveOneOutCasesFollowTheSplit() {
        let dataset = SequenceDataset(sequences: [(user: "u", items: ["a", "b", "c", "d"]), (user: "v", items: ["x", "y"])], source: "t")
        let split = dataset.leaveOneOut()
        #expect(split.cases(for: .test) == [EvaluationCase(history: ["a", "b", "c"], target: "d")])
        #expect(split.cases(for: .validation) == [EvaluationCase(history: ["a", "b"], target: "c")])
    }
}
