import Foundation
import Testing
@testable import StreamRecModels

/// Answers every request with a fixed ranking, minus exclusions: a recommender whose metrics
/// can be worked out by hand.
struct FixedRecommender: Recommender {
    let ranking: [ItemID]
    var descriptor: ModelDescriptor { ModelDescriptor(name: "fixed", version: "1") }

    func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]] {
        requests.map { request in
            Array(ranking.filter { !request.exclude.contains($0) }.prefix(max(0, request.k))
                .enumerated().map { ScoredItem(item: $0.element, score: -Float($0.offset)) })
        }
    }
}

@Suite struct MetricsTests {
    @Test func handComputedSingleListValues() {
        let ranked = ["a", "b", "c", "d"]
        #expect(RankingMetrics.rank(of: "c", in: ranked) == 3)
        #expect(RankingMetrics.hitRate(ranked, target: "c", k: 2) == 0)
        #expect(RankingMetrics.hitRate(ranked, target: "c", k: 3) == 1)
        #expect(RankingMetrics.ndcg(ranked, target: "a", k: 10) == 1)
        #expect(abs(RankingMetrics.ndcg(ranked, target: "c", k: 3) - 0.5) < 1e-12)  // 1 / log2(4)
        #expect(abs(RankingMetrics.ndcg(ranked, target: "b", k: 3) - 1 / log2(3.0)) < 1e-12)
        #expect(RankingMetrics.ndcg(ranked, target: "d", k: 3) == 0)
        #expect(abs(RankingMetrics.reciprocalRank(ranked, target: "d") - 0.25) < 1e-12)
        #expect(RankingMetrics.hitRate(ranked, target: "z", k: 10) == 0)
        #expect(RankingMetrics.ndcg(ranked, target: "z", k: 10) == 0)
        #expect(RankingMetrics.reciprocalRank(ranked, target: "z") == 0)
    }

    @Test func evaluationAveragesOverCasesAndExcludesTheHistory() {
        let ids: [String: ItemID] = ["a": 1, "b": 2, "c": 3, "d": 4, "e": 5]
        let recommender = FixedRecommender(ranking: [1, 2, 3, 4, 5])
        let cases: [(history: [String], target: String)] = [
            (["e"], "a"),        // rank 1
            (["a"], "c"),        // a excluded: b, c -> rank 2
            (["b"], "e"),        // a, c, d, e -> rank 4, outside k = 3
        ]
        let result = evaluateNextItem(recommender: recommender, cases: cases, itemID: { ids[$0]! }, k: 3, batchSize: 2)
        #expect(result.cases == 3 && result.hits == 2 && result.k == 3)
        #expect(abs(result.hitRate - 2.0 / 3) < 1e-12)
        #expect(abs(result.ndcg - (1 + 1 / log2(3.0)) / 3) < 1e-12)
        #expect(abs(result.mrr - (1 + 0.5) / 3) < 1e-12)
        let withoutExclusion = evaluateNextItem(recommender: recommender, cases: cases, itemID: { ids[$0]! }, k: 3, excludeHistory: false)
        #expect(abs(withoutExclusion.mrr - (1 + 1.0 / 3) / 3) < 1e-12)
        #expect(evaluateNextItem(recommender: recommender, cases: [], itemID: { ids[$0]! }).hitRate == 0)
    }

    @Test func popularityBaselineRanksByCountAndHonoursExclusion() {
        let baseline = PopularityRecommender(counts: [5: 1, 3: 4, 9: 4, 0: 100, 2: 2])
        let answers = baseline.recommend([
            RecommendationRequest(user: "u", history: [], k: 10, exclude: []),
            RecommendationRequest(user: "u", history: [], k: 2, exclude: [3]),
            RecommendationRequest(user: "u", history: [], k: 0, exclude: []),
        ])
        #expect(answers[0].map(\.item) == [3, 9, 2, 5], "ties go to the smaller id; 0 is never an item")
        #expect(answers[1].map(\.item) == [9, 2])
        #expect(answers[2].isEmpty)
        #expect(baseline.descriptor.name == "popularity")
    }
}

@Suite struct TopKTests {
    @Test func matchesAFullSortWithTies() {
        var random = Xoshiro256StarStar(seed: 9)
        let scores = (0..<2000).map { _ in Float(random.nextInt(below: 50)) }
        let expected = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        for k in [1, 17, 50, 2000, 5000] {
            var top = TopK(k: k)
            // Reverse arrival order: the tie rule, not the order, decides.
            for id in scores.indices.reversed() { top.insert(score: scores[id], id: id) }
            #expect(top.sorted().map(\.id) == Array(expected.prefix(k)), "k \(k)")
            #expect(TopK.select(scores, k: k).map(\.id) == Array(expected.prefix(k)), "k \(k)")
        }
    }

    @Test func edgeCases() {
        var none = TopK(k: 0)
        none.insert(score: 1, id: 1)
        #expect(none.sorted().isEmpty)
        var everything = TopK(k: Int.max)
        everything.insert(score: .nan, id: 0)
        everything.insert(score: 2, id: 1)
        everything.insert(score: -.infinity, id: 2)
        #expect(everything.sorted().map(\.id) == [1, 2])
        #expect(everything.threshold == nil)
        var two = TopK(k: 2)
        two.insert(score: 1, id: 0)
        two.insert(score: 3, id: 1)
        two.insert(score: 2, id: 2)
        #expect(two.threshold == 2)
        #expect(TopK(k: -4).k == 0)
    }
}
