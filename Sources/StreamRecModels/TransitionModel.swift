// Item-to-item transition model: "people who interacted with A next interacted with B".
// Small, fast and real; the first model served, and later the fallback for cold sessions.
//
// Training counts, for every item a, the items b that follow it within `window` steps
// (weight 1/d at distance d), keeps the top `successorsPerItem` successors of each item, and
// normalises each row to probabilities. Scoring a session sums, over its last `historyItems`
// items, recencyDecay^age * P(b | a); popular items fill the rest, always below every
// transition score, so a cold session still gets an answer.
//
// Shapes (CSR): successorOffsets [items + 1], successorItems [nnz], successorWeights [nnz],
// popularity [items].
import Foundation

public struct TransitionConfig: Sendable, Equatable {
    public var window = 3
    public var successorsPerItem = 50
    public var historyItems = 5
    public var recencyDecay: Float = 0.6
    public init() {}
}

public struct TransitionModel: Sendable {
    public static let kind = "transition"
    /// Row i is the external id items[i].
    public let items: [String]
    public let config: TransitionConfig
    let successorOffsets: [Int32]
    let successorItems: [Int32]
    let successorWeights: [Float]
    let popularity: [Float]
    /// Item rows, most popular first.
    let popularRanking: [Int32]
    public let version: String
    public let training: SnapshotManifest.TrainingData

    public static func train(sequences: [[String]], config: TransitionConfig, source: String = "in-memory") -> TransitionModel {
        var index: [String: Int32] = [:]
        var items: [String] = []
        var encoded: [[Int32]] = []
        encoded.reserveCapacity(sequences.count)
        var interactions = 0
        for seq in sequences {
            interactions += seq.count
            encoded.append(seq.map { item in
                if let i = index[item] { return i }
                let i = Int32(items.count)
                index[item] = i
                items.append(item)
                return i
            })
        }
        var counts = [[Int32: Float]](repeating: [:], count: items.count)
        var popularity = [Float](repeating: 0, count: items.count)
        for seq in encoded {
            for (i, a) in seq.enumerated() {
                popularity[Int(a)] += 1
                var d = 1
                while d <= config.window && i + d < seq.count {
                    let b = seq[i + d]
                    if b != a { counts[Int(a)][b, default: 0] += 1 / Float(d) }
                    d += 1
                }
            }
        }
        var offsets: [Int32] = [0]
        var succ: [Int32] = []
        var weights: [Float] = []
        offsets.reserveCapacity(items.count + 1)
        for row in counts {
            let total = row.values.reduce(0, +)
            var top = TopK(k: config.successorsPerItem)
            for (b, c) in row { top.insert(c, b) }
            for entry in top.sorted() {
                succ.append(entry.index)
                weights.append(entry.score / total)
            }
            offsets.append(Int32(succ.count))
        }
        let training = SnapshotManifest.TrainingData(users: sequences.count, items: items.count, interactions: interactions, source: source)
        return TransitionModel(items: items, config: config, successorOffsets: offsets, successorItems: succ,
                               successorWeights: weights, popularity: popularity, version: "", training: training)
    }

    init(items: [String], config: TransitionConfig, successorOffsets: [Int32], successorItems: [Int32],
         successorWeights: [Float], popularity: [Float], version: String, training: SnapshotManifest.TrainingData) {
        self.items = items
        self.config = config
        self.successorOffsets = successorOffsets
        self.successorItems = successorItems
        self.successorWeights = successorWeights
        self.popularity = popularity
        self.popularRanking = (0..<Int32(items.count)).sorted { (popularity[Int($0)], $1) > (popularity[Int($1)], $0) }
        self.training = training
        self.version = version.isEmpty ? Self.writer(items: items, config: config, offsets: successorOffsets, succ: successorItems,
                                                     weights: successorWeights, popularity: popularity, training: training).contentVersion : version
    }

    private static func writer(items: [String], config: TransitionConfig, offsets: [Int32], succ: [Int32], weights: [Float],
                               popularity: [Float], training: SnapshotManifest.TrainingData) -> SnapshotWriter {
        var w = SnapshotWriter(kind: kind, items: items, hyperParameters: [
            "window": String(config.window), "successors_per_item": String(config.successorsPerItem),
            "history_items": String(config.historyItems), "recency_decay": String(config.recencyDecay),
        ], training: training)
        w.add("successor_offsets", ints: offsets, shape: [offsets.count])
        w.add("successor_items", ints: succ, shape: [succ.count])
        w.add("successor_weights", floats: weights, shape: [weights.count])
        w.add("popularity", floats: popularity, shape: [popularity.count])
        return w
    }

    public func save(to path: String) throws {
        try Self.writer(items: items, config: config, offsets: successorOffsets, succ: successorItems, weights: successorWeights,
                        popularity: popularity, training: training).write(to: path)
    }

    public static func load(path: String) throws -> TransitionModel {
        let snapshot = try Snapshot.read(path: path)
        return try load(snapshot)
    }

    public static func load(_ snapshot: Snapshot) throws -> TransitionModel {
        let m = snapshot.manifest
        guard m.kind == kind else {
            throw ModelError(.badSnapshot, "\(snapshot.path): a '\(m.kind)' snapshot, not a transition model")
        }
        let n = m.items.count
        var config = TransitionConfig()
        config.window = Int(m.hyperParameters["window"] ?? "") ?? config.window
        config.successorsPerItem = Int(m.hyperParameters["successors_per_item"] ?? "") ?? config.successorsPerItem
        config.historyItems = Int(m.hyperParameters["history_items"] ?? "") ?? config.historyItems
        config.recencyDecay = Float(m.hyperParameters["recency_decay"] ?? "") ?? config.recencyDecay
        let offsets = try snapshot.ints("successor_offsets", shape: [n + 1])
        let nnz = Int(offsets.last ?? 0)
        let succ = try snapshot.ints("successor_items", shape: [nnz])
        let weights = try snapshot.floats("successor_weights", shape: [nnz])
        let popularity = try snapshot.floats("popularity", shape: [n])
        guard offsets.first == 0, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }),
              succ.allSatisfy({ $0 >= 0 && Int($0) < n }) else {
            throw ModelError(.badSnapshot, "\(snapshot.path): successor table is inconsistent; the snapshot was refused")
        }
        return TransitionModel(items: m.items, config: config, successorOffsets: offsets, successorItems: succ,
                               successorWeights: weights, popularity: popularity, version: m.modelVersion, training: m.training)
    }

    /// The most popular items of the training data, as external ids.
    public func popularItems(limit: Int) -> [String] {
        popularRanking.prefix(limit).map { items[Int($0)] }
    }

    /// Binds the model to the service's vocabulary: `itemID` returns the vocabulary id of an
    /// external id (the service persists new ones).
    public func bind(itemID: (String) -> ItemID) -> TransitionRecommender {
        let toVocabulary = items.map(itemID)
        let maxID = Int(toVocabulary.max() ?? 0)
        var toModel = [Int32](repeating: -1, count: maxID + 1)
        for (row, id) in toVocabulary.enumerated() { toModel[Int(id)] = Int32(row) }
        return TransitionRecommender(model: self, toVocabulary: toVocabulary, toModel: toModel)
    }
}

public struct TransitionRecommender: Recommender {
    let model: TransitionModel
    let toVocabulary: [ItemID]
    /// Vocabulary id -> model row, -1 for items the model never saw (including ids newer than it).
    let toModel: [Int32]

    public var descriptor: ModelDescriptor { ModelDescriptor(name: TransitionModel.kind, version: model.version) }

    public func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]] {
        requests.map(recommend)
    }

    private func recommend(_ request: RecommendationRequest) -> [ScoredItem] {
        let k = max(0, request.k)
        guard k > 0 else { return [] }
        var scores: [Int32: Float] = [:]
        var weight: Float = 1
        var used = 0
        for id in request.history.reversed() {
            guard used < model.config.historyItems else { break }
            used += 1
            defer { weight *= model.config.recencyDecay }
            guard Int(id) < toModel.count else { continue }
            let row = toModel[Int(id)]
            guard row >= 0 else { continue }
            let start = Int(model.successorOffsets[Int(row)]), end = Int(model.successorOffsets[Int(row) + 1])
            for j in start..<end {
                scores[model.successorItems[j], default: 0] += weight * model.successorWeights[j]
            }
        }
        var top = TopK(k: k)
        for (row, score) in scores where !request.exclude.contains(toVocabulary[Int(row)]) {
            top.insert(score, row)
        }
        var result = top.sorted().map { ScoredItem(item: toVocabulary[Int($0.index)], score: $0.score) }
        if result.count < k {
            // Fill with popular items, scored below every transition score.
            let chosen = Set(result.map(\.item))
            let ceiling = result.last?.score ?? 1
            let maxPopularity = model.popularRanking.first.map { model.popularity[Int($0)] } ?? 1
            for row in model.popularRanking {
                let id = toVocabulary[Int(row)]
                if chosen.contains(id) || request.exclude.contains(id) { continue }
                let share = model.popularity[Int(row)] / max(maxPopularity, 1)
                result.append(ScoredItem(item: id, score: ceiling * 0.5 * share))
                if result.count == k { break }
            }
        }
        return result
    }
}
