// Offline ranking metrics with one relevant item per case (next-item prediction).
import Foundation

public enum RankingMetrics {
    /// 1 if the target is in the top k (rank starts at 1), else 0.
    public static func hitRate(rank: Int?, k: Int) -> Double {
        guard let rank, rank <= k else { return 0 }
        return 1
    }

    /// One relevant item: DCG = 1 / log2(rank + 1), and the ideal DCG is 1.
    public static func ndcg(rank: Int?, k: Int) -> Double {
        guard let rank, rank <= k else { return 0 }
        return 1 / log2(Double(rank) + 1)
    }

    public static func reciprocalRank(rank: Int?) -> Double {
        guard let rank else { return 0 }
        return 1 / Double(rank)
    }

    /// 1-based position of `target` in `ranked`, nil if absent.
    public static func rank<T: Equatable>(of target: T, in ranked: [T]) -> Int? {
        ranked.firstIndex(of: target).map { $0 + 1 }
    }
}

/// Averages HR@K, NDCG@K and MRR over cases.
public struct RankingSummary: Sendable, Equatable {
    public private(set) var cases = 0
    public private(set) var hits: [Int: Double] = [:]
    public private(set) var ndcgSums: [Int: Double] = [:]
    public private(set) var reciprocalRankSum = 0.0
    public let cutoffs: [Int]

    public init(cutoffs: [Int] = [5, 10, 20]) {
        self.cutoffs = cutoffs
    }

    public mutating func add(rank: Int?) {
        cases += 1
        for k in cutoffs {
            hits[k, default: 0] += RankingMetrics.hitRate(rank: rank, k: k)
            ndcgSums[k, default: 0] += RankingMetrics.ndcg(rank: rank, k: k)
        }
        reciprocalRankSum += RankingMetrics.reciprocalRank(rank: rank)
    }

    public func hitRate(at k: Int) -> Double { cases == 0 ? 0 : (hits[k] ?? 0) / Double(cases) }
    public func ndcg(at k: Int) -> Double { cases == 0 ? 0 : (ndcgSums[k] ?? 0) / Double(cases) }
    public var mrr: Double { cases == 0 ? 0 : reciprocalRankSum / Double(cases) }
}

/// Scores a recommender on next-item targets: each case is a history and the item that followed.
/// Items are given as external ids and mapped through `itemID`.
public func evaluateNextItem(recommender: any Recommender, cases: [(history: [String], target: String)],
                             itemID: (String) -> ItemID?, k: Int = 20, excludeHistory: Bool = true,
                             batchSize: Int = 256) -> RankingSummary {
    var summary = RankingSummary(cutoffs: [5, 10, 20].filter { $0 <= k })
    var start = 0
    while start < cases.count {
        let batch = cases[start..<min(start + batchSize, cases.count)]
        let requests = batch.map { c -> RecommendationRequest in
            let history = c.history.compactMap(itemID)
            return RecommendationRequest(user: "", history: history, k: k, exclude: excludeHistory ? Set(history) : [])
        }
        let results = recommender.recommend(requests)
        for (c, ranked) in zip(batch, results) {
            let target = itemID(c.target)
            summary.add(rank: target.flatMap { t in RankingMetrics.rank(of: t, in: ranked.map(\.item)) })
        }
        start += batchSize
    }
    return summary
}
