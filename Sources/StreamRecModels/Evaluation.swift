// Offline full-ranking evaluation: every case's target is ranked against ALL of a CatalogScorer's
// items (no sampled negatives), under two protocols at once:
//   all                every item competes, including the ones already in the history
//   history excluded   the history's items are left out of the ranking, as the service's "seen"
//                      exclusion does; the target itself is never left out, even when the user had
//                      it before (a re-consumed item is still the right answer, and excluding it
//                      would turn the case into a guaranteed miss)
//
// Rank = 1 + the items scoring strictly higher + the items with an equal score and a smaller row.
// That is the tie rule TopK uses, so a rank within K always agrees with the top-K list. NaN scores
// never outrank anything; a NaN target score counts as -infinity.
//
// Case handling: history items the model does not know are dropped; a target it does not know is
// a miss at every cut-off (no rank) and is counted in `unknownTargets`. Every mean below is over
// all cases, misses included.
//
// Beyond accuracy (definitions as in Boz et al., "Improving Sequential Recommendations with
// LLMs", arXiv 2402.01339):
//   coverage@K      distinct items in all top-K lists / items in the dataset
//   serendipity@K   fraction of cases whose target is in the top K and is not one of the K most
//                   popular training items (what a popularity baseline would have shown)
// Segments, at K = 10: head/tail by the target's training popularity (head = the 20% most
// frequent training items), and quintiles of the case history length.
import Foundation

/// One next-item case: the session so far (external ids, oldest first) and the item that came next.
public struct EvaluationCase: Sendable, Equatable {
    public var history: [String]
    public var target: String

    public init(history: [String], target: String) {
        self.history = history
        self.target = target
    }
}

/// Which leave-one-out target to evaluate on.
public enum EvaluationSplit: String, Codable, Sendable, CaseIterable {
    /// Target = the last item, history = everything before it (final figures).
    case test
    /// Target = the second-to-last item, history = the training items (tuning).
    case validation
}

extension LeaveOneOutSplit {
    public func cases(for split: EvaluationSplit) -> [EvaluationCase] {
        let pairs = split == .test ? testCases : validationCases
        return pairs.map { EvaluationCase(history: $0.history, target: $0.target) }
    }
}

/// Interaction counts of some training data and the items ranked by them: most frequent first,
/// ties to the item seen first, so the ranking is reproducible.
public struct ItemPopularity: Sendable {
    /// Distinct items in order of first appearance.
    public let items: [String]
    /// counts[i] = occurrences of items[i].
    public let counts: [Int]
    /// Indices into `items`, most popular first.
    public let ranking: [Int]
    private let indexOf: [String: Int]

    public init(sequences: [[String]]) {
        var indexOf: [String: Int] = [:]
        var items: [String] = []
        var counts: [Int] = []
        for sequence in sequences {
            for item in sequence {
                if let index = indexOf[item] {
                    counts[index] += 1
                } else {
                    indexOf[item] = items.count
                    items.append(item)
                    counts.append(1)
                }
            }
        }
        self.items = items
        self.counts = counts
        self.indexOf = indexOf
        ranking = items.indices.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
    }

    /// Occurrences of `item` (0 when it never appears).
    public func count(of item: String) -> Int {
        indexOf[item].map { counts[$0] } ?? 0
    }

    /// The `limit` most popular items, most popular first.
    public func mostPopular(_ limit: Int) -> [String] {
        ranking.prefix(max(0, limit)).map { items[$0] }
    }
}

/// The popularity baseline as a CatalogScorer: every session gets the training counts as scores,
/// rows in order of first appearance, so ties rank like PopularityRecommender's (first seen first).
public struct PopularityScorer: CatalogScorer {
    public static let kind = "popularity"
    public let items: [String]
    private let scores: [Float]

    public init(popularity: ItemPopularity) {
        items = popularity.items
        scores = popularity.counts.map(Float.init)
    }

    public init(sequences: [[String]]) {
        self.init(popularity: ItemPopularity(sequences: sequences))
    }

    public func scoreAll(histories: [[Int32]], into scores: UnsafeMutablePointer<Float>) {
        self.scores.withUnsafeBufferPointer { row in
            guard let base = row.baseAddress else { return }
            for h in histories.indices {
                (scores + h * row.count).update(from: base, count: row.count)
            }
        }
    }
}

/// The CatalogScorer a snapshot holds, chosen by its manifest kind through the catalogue.
public func loadScorer(snapshot: Snapshot, catalogue: ModelCatalogue = .standard) throws -> any CatalogScorer {
    try catalogue.load(snapshot).model
}

/// Ranks each case's target against the whole catalogue and aggregates the metrics above.
public struct FullRankingEvaluator: Sendable {
    /// The cut-offs reported for HR, NDCG, coverage and serendipity.
    public static let cutoffs = [5, 10, 20]
    /// The cut-off of the head/tail and history-length segments.
    public static let segmentCutoff = 10
    /// Share of the training items (most frequent first) that make up the head.
    public static let headShare = 0.2

    /// Histories per scoreAll call; the score buffer holds batchSize x items floats.
    public var batchSize: Int

    public init(batchSize: Int = 256) {
        self.batchSize = max(1, batchSize)
    }

    /// One case's outcome under both protocols. Rows are the scorer's.
    public struct RankedCase: Sendable, Equatable {
        /// Length of the case's history as given (unknown items included).
        public var historyLength: Int
        /// 1-based rank among all items; nil when the model does not know the target.
        public var rankAll: Int?
        /// 1-based rank with the history's items left out; nil when the target is unknown.
        public var rankHistoryExcluded: Int?
        /// The best max(cutoffs) rows, best first, under each protocol.
        public var topAll: [Int32]
        public var topHistoryExcluded: [Int32]
    }

    /// Scores the cases in batches of `batchSize` and ranks each target under both protocols.
    public func rank(scorer: any CatalogScorer, cases: [EvaluationCase]) -> [RankedCase] {
        let items = scorer.items
        let itemCount = items.count
        let rowOf = Dictionary(items.enumerated().map { ($0.element, Int32($0.offset)) }, uniquingKeysWith: { first, _ in first })
        let listLength = Self.cutoffs.max() ?? 0

        guard itemCount > 0 else {
            return cases.map { RankedCase(historyLength: $0.history.count, rankAll: nil, rankHistoryExcluded: nil, topAll: [], topHistoryExcluded: []) }
        }
        let capacity = min(batchSize, max(cases.count, 1)) * itemCount
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
        defer { buffer.deallocate() }

        var ranked: [RankedCase] = []
        ranked.reserveCapacity(cases.count)
        var start = 0
        while start < cases.count {
            let batch = cases[start..<min(start + batchSize, cases.count)]
            let histories = batch.map { $0.history.compactMap { rowOf[$0] } }
            // Zeroed first, so a scorer that skips a row cannot leak the previous batch's scores.
            buffer.update(repeating: 0, count: batch.count * itemCount)
            scorer.scoreAll(histories: histories, into: buffer)
            // Rows of a batch are independent: rank them on both cores, each into its own slot.
            let scoreRows = DisjointRows(base: buffer)
            let outcomes = [RankedCase](unsafeUninitializedCapacity: batch.count) { slots, initialized in
                let outcomeSlots = DisjointRows(base: slots.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: batch.count) { offset in
                    let testCase = batch[batch.startIndex + offset]
                    let scores = UnsafeBufferPointer(start: scoreRows.base + offset * itemCount, count: itemCount)
                    (outcomeSlots.base + offset).initialize(to: Self.rankCase(testCase, history: histories[offset], target: rowOf[testCase.target],
                                                                 scores: scores, listLength: listLength))
                }
                initialized = batch.count
            }
            ranked.append(contentsOf: outcomes)
            start = batch.endIndex
        }
        return ranked
    }

    /// One case under both protocols; `history` holds the model rows of its known items.
    static func rankCase(_ testCase: EvaluationCase, history: [Int32], target: Int32?,
                         scores: UnsafeBufferPointer<Float>, listLength: Int) -> RankedCase {
        var excluded = Set(history)
        if let target { excluded.remove(target) }
        var outcome = RankedCase(historyLength: testCase.history.count, rankAll: nil, rankHistoryExcluded: nil,
                                 topAll: top(scores, k: listLength, excluding: []),
                                 topHistoryExcluded: top(scores, k: listLength, excluding: excluded))
        if let target {
            let (above, excludedAbove) = beaters(of: Int(target), in: scores, excluded: excluded)
            outcome.rankAll = 1 + above
            outcome.rankHistoryExcluded = 1 + above - excludedAbove
        }
        return outcome
    }

    /// Ranks the cases and builds the report. `trainingSequences` give the popularity behind
    /// serendipity and head/tail; `catalogItemCount` (the dataset's distinct items) is the
    /// denominator of coverage.
    public func evaluate(scorer: any CatalogScorer, cases: [EvaluationCase], trainingSequences: [[String]],
                         catalogItemCount: Int, model: ModelDescriptor, dataset: String, split: String) -> EvaluationReport {
        let started = Date()
        let ranked = rank(scorer: scorer, cases: cases)
        var report = Self.report(ranked: ranked, cases: cases, popularity: ItemPopularity(sequences: trainingSequences),
                                 catalogItemCount: catalogItemCount)
        report.model = model.name
        report.modelVersion = model.version
        report.modelItems = scorer.items.count
        report.dataset = dataset
        report.split = split
        report.batchSize = batchSize
        report.wallSeconds = Date().timeIntervalSince(started)
        return report
    }

    /// The metrics of already-ranked cases (index-aligned with `cases`); identity fields are left
    /// empty for the caller.
    public static func report(ranked: [RankedCase], cases: [EvaluationCase], popularity: ItemPopularity,
                              catalogItemCount: Int) -> EvaluationReport {
        precondition(ranked.count == cases.count, "one ranked outcome per case")
        let headItems = Int((headShare * Double(popularity.items.count)).rounded(.up))
        let head = Set(popularity.mostPopular(headItems))
        let isHead = cases.map { head.contains($0.target) }
        let quintile = lengthQuintiles(ranked.map(\.historyLength))
        let popularTop = Dictionary(uniqueKeysWithValues: cutoffs.map { ($0, Set(popularity.mostPopular($0))) })

        func protocolResult(_ name: String, rank: (RankedCase) -> Int?, top: (RankedCase) -> [Int32]) -> EvaluationReport.ProtocolResult {
            let ranks = ranked.map(rank)
            let count = Double(max(ranks.count, 1))
            let cutoffResults = cutoffs.map { k in
                var covered = Set<Int32>()
                for outcome in ranked { covered.formUnion(top(outcome).prefix(k)) }
                let hits = ranks.filter { RankingMetrics.hitRate(rank: $0, k: k) == 1 }.count
                let serendipitous = zip(ranks, cases).filter { rank, testCase in
                    RankingMetrics.hitRate(rank: rank, k: k) == 1 && !popularTop[k]!.contains(testCase.target)
                }.count
                return EvaluationReport.Cutoff(
                    k: k, hits: hits, hitRate: Double(hits) / count,
                    ndcg: ranks.reduce(0) { $0 + RankingMetrics.ndcg(rank: $1, k: k) } / count,
                    coveredItems: covered.count,
                    coverage: catalogItemCount > 0 ? Double(covered.count) / Double(catalogItemCount) : 0,
                    serendipity: Double(serendipitous) / count)
            }
            func segment(_ label: String, _ members: [Int]) -> EvaluationReport.Segment {
                let lengths = members.map { ranked[$0].historyLength }
                let n = Double(max(members.count, 1))
                return EvaluationReport.Segment(
                    name: label, cases: members.count, minHistoryLength: lengths.min(), maxHistoryLength: lengths.max(),
                    hitRate: members.reduce(0) { $0 + RankingMetrics.hitRate(rank: ranks[$1], k: segmentCutoff) } / n,
                    ndcg: members.reduce(0) { $0 + RankingMetrics.ndcg(rank: ranks[$1], k: segmentCutoff) } / n)
            }
            return EvaluationReport.ProtocolResult(
                name: name, cutoffs: cutoffResults,
                mrr: ranks.reduce(0) { $0 + RankingMetrics.reciprocalRank(rank: $1) } / count,
                head: segment("head", ranked.indices.filter { isHead[$0] }),
                tail: segment("tail", ranked.indices.filter { !isHead[$0] }),
                lengthQuintiles: (0..<5).map { q in segment("q\(q + 1)", ranked.indices.filter { quintile[$0] == q }) })
        }

        return EvaluationReport(
            cases: cases.count, unknownTargets: ranked.filter { $0.rankAll == nil }.count,
            catalogItems: catalogItemCount, trainingItems: popularity.items.count, headItems: headItems,
            all: protocolResult("all", rank: \.rankAll, top: \.topAll),
            historyExcluded: protocolResult("history excluded", rank: \.rankHistoryExcluded, top: \.topHistoryExcluded))
    }

    /// Quintile (0...4) of each length. The upper bounds are the lengths at the 20/40/60/80%
    /// positions of the sorted lengths; a length goes to the first quintile whose bound it does
    /// not exceed, so equal lengths always share a quintile (quintiles may then be uneven, or
    /// empty when most lengths are equal).
    static func lengthQuintiles(_ lengths: [Int]) -> [Int] {
        guard !lengths.isEmpty else { return [] }
        let sorted = lengths.sorted()
        let bounds = (1...4).map { q in sorted[max(0, (q * sorted.count + 4) / 5 - 1)] }
        return lengths.map { length in bounds.firstIndex { length <= $0 } ?? 4 }
    }

    /// Best `k` rows of one score row, skipping `excluded`, via TopK (ties: smaller row).
    static func top(_ scores: UnsafeBufferPointer<Float>, k: Int, excluding excluded: Set<Int32>) -> [Int32] {
        var best = TopK(k: k)
        for row in scores.indices {
            let score = scores[row]
            if let floor = best.threshold, score < floor { continue }
            if !excluded.isEmpty && excluded.contains(Int32(row)) { continue }
            best.insert(score: score, id: row)
        }
        return best.sorted().map { Int32($0.id) }
    }

    /// Items ranked above `target` (higher score, or equal score and smaller row), and how many
    /// of them are in `excluded`. The excluded rows are checked separately: a set lookup per
    /// outranking item would dominate the time when targets rank low in a large catalogue.
    static func beaters(of target: Int, in scores: UnsafeBufferPointer<Float>, excluded: Set<Int32>) -> (Int, Int) {
        let raw = scores[target]
        let targetScore = raw.isNaN ? -Float.infinity : raw
        func outranks(_ row: Int) -> Bool {
            let score = scores[row]
            return score > targetScore || (score == targetScore && row < target)
        }
        var above = 0
        for row in scores.indices where outranks(row) { above += 1 }
        return (above, excluded.filter { outranks(Int($0)) }.count)
    }
}

/// A buffer shared by the iterations of one concurrentPerform, each of which reads or writes only
/// its own row: that disjointness is what makes handing the pointer across threads safe.
private struct DisjointRows<Element>: @unchecked Sendable {
    let base: UnsafeMutablePointer<Element>
}

/// Everything one evaluation measured, ready for a table or JSON.
public struct EvaluationReport: Codable, Sendable, Equatable {
    /// Accuracy and beyond-accuracy figures at one cut-off.
    public struct Cutoff: Codable, Sendable, Equatable {
        public var k: Int
        /// Cases whose target ranked within k.
        public var hits: Int
        public var hitRate: Double
        public var ndcg: Double
        /// Distinct items over all top-k lists.
        public var coveredItems: Int
        /// coveredItems / items in the dataset.
        public var coverage: Double
        public var serendipity: Double
    }

    /// HR and NDCG at `segmentCutoff` over a subset of the cases.
    public struct Segment: Codable, Sendable, Equatable {
        /// "head", "tail", or "q1"..."q5" (shortest histories first).
        public var name: String
        public var cases: Int
        /// The history lengths the segment's cases span (absent for an empty segment).
        public var minHistoryLength: Int?
        public var maxHistoryLength: Int?
        public var hitRate: Double
        public var ndcg: Double
    }

    public struct ProtocolResult: Codable, Sendable, Equatable {
        /// "all" or "history excluded".
        public var name: String
        public var cutoffs: [Cutoff]
        /// Mean reciprocal rank over the full ranking (not truncated at any k).
        public var mrr: Double
        public var head: Segment
        public var tail: Segment
        public var lengthQuintiles: [Segment]

        public func cutoff(_ k: Int) -> Cutoff? { cutoffs.first { $0.k == k } }
    }

    public var model = ""
    public var modelVersion = ""
    public var modelItems = 0
    public var dataset = ""
    /// "test" or "validation".
    public var split = ""
    public var cases: Int
    /// Cases whose target the model does not know (counted as misses).
    public var unknownTargets: Int
    /// Distinct items in the dataset: the coverage denominator.
    public var catalogItems: Int
    /// Distinct items in the training sequences.
    public var trainingItems: Int
    /// The most frequent training items that count as head.
    public var headItems: Int
    public var segmentCutoff = FullRankingEvaluator.segmentCutoff
    public var batchSize = 0
    /// Scoring and ranking time, seconds.
    public var wallSeconds = 0.0
    public var all: ProtocolResult
    public var historyExcluded: ProtocolResult

    public init(cases: Int, unknownTargets: Int, catalogItems: Int, trainingItems: Int, headItems: Int,
                all: ProtocolResult, historyExcluded: ProtocolResult) {
        self.cases = cases
        self.unknownTargets = unknownTargets
        self.catalogItems = catalogItems
        self.trainingItems = trainingItems
        self.headItems = headItems
        self.all = all
        self.historyExcluded = historyExcluded
    }

    /// Pretty-printed with sorted keys, so reports diff cleanly.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Both protocols side by side, one metric a line.
    public func table() -> String {
        var lines: [String] = []
        let version = modelVersion.isEmpty ? "" : " \(modelVersion)"
        lines.append("model     \(model)\(version) (\(modelItems) items)")
        lines.append("data      \(dataset), split \(split): \(cases) cases, \(unknownTargets) unknown targets, \(catalogItems) items")
        lines.append(String(format: "time      %.2f s (batch %d)", wallSeconds, batchSize))
        lines.append("")
        var rows: [(String, String, String)] = [("metric", all.name, historyExcluded.name)]
        func number(_ value: Double) -> String { String(format: "%.4f", value) }
        func add(_ label: String, _ value: (ProtocolResult) -> Double) {
            rows.append((label, number(value(all)), number(value(historyExcluded))))
        }
        for k in FullRankingEvaluator.cutoffs { add("HR@\(k)") { $0.cutoff(k)?.hitRate ?? 0 } }
        for k in FullRankingEvaluator.cutoffs { add("NDCG@\(k)") { $0.cutoff(k)?.ndcg ?? 0 } }
        add("MRR") { $0.mrr }
        for k in FullRankingEvaluator.cutoffs { add("coverage@\(k)") { $0.cutoff(k)?.coverage ?? 0 } }
        for k in FullRankingEvaluator.cutoffs { add("serendipity@\(k)") { $0.cutoff(k)?.serendipity ?? 0 } }
        let k = segmentCutoff
        func segmentRows(_ label: String, _ pick: @escaping (ProtocolResult) -> Segment) {
            add("\(label) HR@\(k)") { pick($0).hitRate }
            add("\(label) NDCG@\(k)") { pick($0).ndcg }
        }
        segmentRows("head (\(all.head.cases) cases, top \(headItems) items)") { $0.head }
        segmentRows("tail (\(all.tail.cases) cases)") { $0.tail }
        for (q, segment) in all.lengthQuintiles.enumerated() {
            let range = segment.minHistoryLength.map { "\($0)-\(segment.maxHistoryLength ?? $0)" } ?? "empty"
            segmentRows("len \(segment.name) \(range) (\(segment.cases) cases)") { $0.lengthQuintiles[q] }
        }
        let widths = (rows.map(\.0.count).max() ?? 0, max(rows.map(\.1.count).max() ?? 0, 8), rows.map(\.2.count).max() ?? 0)
        func pad(_ text: String, _ width: Int, left: Bool) -> String {
            let fill = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + fill : fill + text
        }
        for (index, row) in rows.enumerated() {
            lines.append(pad(row.0, widths.0, left: true) + "  " + pad(row.1, widths.1, left: false) + "  " + pad(row.2, widths.2, left: false))
            if index == 0 {
                lines.append(String(repeating: "-", count: widths.0 + widths.1 + widths.2 + 4))
            }
        }
        return lines.joined(separator: "\n")
    }
}
