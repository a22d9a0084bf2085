// Offline next-item metrics (one relevant item per case), the evaluation loop, and the popularity
// baseline every model is compared with.
import Foundation

/// Metrics for one ranked list and its single target. Ranks start at 1.
public enum RankingMetrics {
    /// 1-based position of `target` in `ranked`, nil when absent.
    public static func rank<T: Equatable>(of target: T, in ranked: [T]) -> Int? {
        ranked.firstIndex(of: target).map { $0 + 1 }
    }

    /// HR@k: 1 when the target is among the first k, else 0.
    public static func hitRate(rank: Int?, k: Int) -> Double {
        guard let rank, rank >= 1, rank <= k else { return 0 }
        return 1
    }

    /// NDCG@k with one relevant item: the ideal DCG is 1, so it is 1 / log2(rank + 1) within k.
    public static func ndcg(rank: Int?, k: Int) -> Double {
        guard let rank, rank >= 1, rank <= k else { return 0 }
        return 1 / log2(Double(rank) + 1)
    }

    /// 1 / rank, 0 when absent (averaged over cases this is MRR).
    public static func reciprocalRank(rank: Int?) -> Double {
        guard let rank, rank >= 1 else { return 0 }
        return 1 / Double(rank)
    }

    public static func hitRate<T: Equatable>(_ ranked: [T], target: T, k: Int) -> Double {
        hitRate(rank: rank(of: target, in: ranked), k: k)
    }

    public static func ndcg<T: Equatable>(_ ranked: [T], target: T, k: Int) -> Double {
        ndcg(rank: rank(of: target, in: ranked), k: k)
    }

    public static func reciprocalRank<T: Equatable>(_ ranked: [T], target: T) -> Double {
        reciprocalRank(rank: rank(of: target, in: ranked))
    }
}

/// Means over the cases of one evaluation at cut-off k.
public struct NextItemEvaluation: Sendable, Equatable {
    public var k: Int
    public var cases: Int
    /// Cases whose target was among the first k.
    public var hits: Int
    public var hitRate: Double
    public var ndcg: Double
    /// Mean reciprocal rank within the k returned items (MRR@k).
    public var mrr: Double

    public init(k: Int, cases: Int, hits: Int, hitRate: Double, ndcg: Double, mrr: Double) {
        self.k = k
        self.cases = cases
        self.hits = hits
        self.hitRate = hitRate
        self.ndcg = ndcg
        self.mrr = mrr
    }
}

/// Asks `recommender` for the top k after each case's history and scores where the real next
/// item landed. `itemID` must be the mapping the recommender was bound with; give unseen items
/// fresh ids, as the service does. With `excludeHistory` the history is excluded, as the
/// service's default "seen" policy does, so the offline figure matches what users would get.
public func evaluateNextItem(recommender: any Recommender, cases: [(history: [String], target: String)],
                             itemID: (String) -> ItemID, k: Int = 10, excludeHistory: Bool = true,
                             batchSize: Int = 256) -> NextItemEvaluation {
    var hits = 0
    var ndcgSum = 0.0
    var reciprocalRankSum = 0.0
    var start = 0
    while start < cases.count {
        let batch = cases[start..<min(start + max(1, batchSize), cases.count)]
        let requests = batch.map { testCase in
            let history = testCase.history.map(itemID)
            return RecommendationRequest(user: "", history: history, k: k, exclude: excludeHistory ? Set(history) : [])
        }
        for (testCase, answer) in zip(batch, recommender.recommend(requests)) {
            let rank = RankingMetrics.rank(of: itemID(testCase.target), in: answer.prefix(k).map(\.item))
            hits += Int(RankingMetrics.hitRate(rank: rank, k: k))
            ndcgSum += RankingMetrics.ndcg(rank: rank, k: k)
            reciprocalRankSum += RankingMetrics.reciprocalRank(rank: rank)
        }
        start = batch.endIndex
    }
    let count = Double(max(cases.count, 1))
    return NextItemEvaluation(k: k, cases: cases.count, hits: hits, hitRate: Double(hits) / count,
                              ndcg: ndcgSum / count, mrr: reciprocalRankSum / count)
}

/// Recommends the most popular items regardless of the session: the baseline a sequential model
/// must beat by a clear margin to be worth serving.
public struct PopularityRecommender: Recommender {
    public let descriptor: ModelDescriptor
    /// Most popular first.
    private let ranked: [ScoredItem]

    /// `counts`: interactions per item. Ties go to the smaller id, so the ranking is reproducible.
    public init(counts: [ItemID: Float], version: String = "") {
        ranked = counts.filter { $0.key != 0 }
            .map { ScoredItem(item: $0.key, score: $0.value) }
            .sorted { $0.score != $1.score ? $0.score > $1.score : $0.item < $1.item }
        descriptor = ModelDescriptor(name: "popularity", version: version)
    }

    /// Counts every item occurrence in `sequences`, mapped through `itemID`.
    public init(sequences: [[String]], itemID: (String) -> ItemID, version: String = "") {
        var counts: [ItemID: Float] = [:]
        for sequence in sequences {
            for item in sequence { counts[itemID(item), default: 0] += 1 }
        }
        self.init(counts: counts, version: version)
    }

    public func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]] {
        requests.map { request in
            var answer: [ScoredItem] = []
            guard request.k > 0 else { return answer }
            for candidate in ranked where !request.exclude.contains(candidate.item) {
                answer.append(candidate)
                if answer.count == request.k { break }
            }
            return answer
        }
    }
}
