// Item-to-item transition model: "after A, people went on to B". The first model served, and
// later the fallback for cold sessions of the neural models.
//
// Training: for every occurrence of item a, each item b at distance d = 1...window after it in
// the same sequence adds 1/d to mass(a -> b) (b != a: a repeated view is not a recommendation).
// Each item keeps its `successorsPerItem` heaviest successors with weight mass(a -> b) / total
// mass(a -> *), an estimate of "b follows a soon". Popularity is each item's occurrence count.
//
// Scoring a session: the sum over its last `historyItems` items of recencyDecay^age * weight(a -> b)
// (age 0 = the latest item). Popular items fill the remaining places, all scored below every
// transition score, so an empty or unknown session still gets an answer.
//
// Snapshot tensors (kind "transition"), successors in CSR form:
//   successor_offsets  i32 [items + 1]   row a's successors are entries offsets[a]..<offsets[a+1]
//   successor_items    i32 [nnz]         model rows, heaviest first within each row
//   successor_weights  f32 [nnz]
//   popularity         f32 [items]
import Foundation

public struct TransitionConfig: Sendable, Equatable {
    /// How many following items count as successors (weights 1, 1/2, 1/3, ...).
    public var window: Int
    /// Successors kept per item (M).
    public var successorsPerItem: Int
    /// How many of the session's latest items are scored (L).
    public var historyItems: Int
    /// Weight of an item of age a is recencyDecay^a.
    public var recencyDecay: Float

    public init(window: Int = 3, successorsPerItem: Int = 50, historyItems: Int = 5, recencyDecay: Float = 0.6) {
        self.window = window
        self.successorsPerItem = successorsPerItem
        self.historyItems = historyItems
        self.recencyDecay = recencyDecay
    }

    /// Out-of-range values raised to the smallest meaningful one, so training never traps.
    var clamped: TransitionConfig {
        let decay = recencyDecay.isFinite && recencyDecay > 0 ? min(recencyDecay, 1) : 1
        return TransitionConfig(window: max(1, window), successorsPerItem: max(1, successorsPerItem),
                                historyItems: max(1, historyItems), recencyDecay: decay)
    }

    var hyperParameters: [String: String] {
        ["window": String(window), "successors_per_item": String(successorsPerItem),
         "history_items": String(historyItems), "recency_decay": String(recencyDecay)]
    }

    init(hyperParameters: [String: String], path: String) throws {
        func value<T: LosslessStringConvertible>(_ key: String, _ isValid: (T) -> Bool) throws -> T {
            guard let text = hyperParameters[key], let parsed = T(text), isValid(parsed) else {
                throw ModelError(.badSnapshot, "snapshot \(path): hyper-parameter '\(key)' is missing or invalid (\(hyperParameters[key] ?? "absent")); retrain the model")
            }
            return parsed
        }
        self.init(window: try value("window") { (v: Int) in v >= 1 },
                  successorsPerItem: try value("successors_per_item") { (v: Int) in v >= 1 },
                  historyItems: try value("history_items") { (v: Int) in v >= 1 },
                  recencyDecay: try value("recency_decay") { (v: Float) in v > 0 && v <= 1 })
    }
}

public struct TransitionModel: Sendable {
    public static let kind = "transition"

    /// Row i is the external item id items[i], in order of first appearance in the training data.
    public let items: [String]
    public let config: TransitionConfig
    /// Content hash for a trained model, the snapshot's model version for a loaded one.
    public let version: String
    public let training: SnapshotManifest.TrainingSummary
    let successorOffsets: [Int32]
    let successorItems: [Int32]
    let successorWeights: [Float]
    let popularity: [Float]
    /// Every row, most popular first (ties: earlier row), so filling costs O(k), not O(items).
    let popularRanking: [Int32]

    public static func train(sequences: [[String]], config: TransitionConfig = TransitionConfig(),
                             source: String = "in-memory") -> TransitionModel {
        let config = config.clamped
        // Rows in order of first appearance, so the same data always gives the same model.
        var rowOf: [String: Int32] = [:]
        var items: [String] = []
        // All sequences end to end; sequenceEnd[p] is the end (exclusive) of position p's sequence.
        var flat: [Int32] = []
        var sequenceEnd: [Int32] = []
        for sequence in sequences {
            for item in sequence {
                if let row = rowOf[item] {
                    flat.append(row)
                } else {
                    let row = Int32(items.count)
                    rowOf[item] = row
                    items.append(item)
                    flat.append(row)
                }
            }
            sequenceEnd.append(contentsOf: repeatElement(Int32(flat.count), count: sequence.count))
        }
        let itemCount = items.count

        var popularity = [Float](repeating: 0, count: itemCount)
        for row in flat { popularity[Int(row)] += 1 }

        // Positions grouped by item (a counting sort), so each item's successors are gathered in
        // one pass into a dense scratch vector instead of per-item dictionaries.
        var occurrenceStart = [Int](repeating: 0, count: itemCount + 1)
        for row in flat { occurrenceStart[Int(row) + 1] += 1 }
        for i in 0..<itemCount { occurrenceStart[i + 1] += occurrenceStart[i] }
        var occurrences = [Int32](repeating: 0, count: flat.count)
        var fillCursor = occurrenceStart
        for (position, row) in flat.enumerated() {
            occurrences[fillCursor[Int(row)]] = Int32(position)
            fillCursor[Int(row)] += 1
        }

        let distanceWeight = (1...config.window).map { 1 / Double($0) }
        var mass = [Double](repeating: 0, count: itemCount)
        var touched: [Int] = []
        var successorOffsets: [Int32] = [0]
        successorOffsets.reserveCapacity(itemCount + 1)
        var successorItems: [Int32] = []
        var successorWeights: [Float] = []
        for a in 0..<itemCount {
            for occurrence in occurrences[occurrenceStart[a]..<occurrenceStart[a + 1]] {
                let position = Int(occurrence)
                let end = min(Int(sequenceEnd[position]), position + config.window + 1)
                for next in (position + 1)..<end {
                    let b = Int(flat[next])
                    if b == a { continue }
                    if mass[b] == 0 { touched.append(b) }
                    mass[b] += distanceWeight[next - position - 1]
                }
            }
            // Touched order is data order, so the total (and thus the weights) is reproducible.
            var total = 0.0
            var top = TopK(k: config.successorsPerItem)
            for b in touched {
                total += mass[b]
                top.insert(score: Float(mass[b]), id: b)
            }
            for entry in top.sorted() {
                successorItems.append(Int32(entry.id))
                successorWeights.append(Float(mass[entry.id] / total))
            }
            successorOffsets.append(Int32(successorItems.count))
            for b in touched { mass[b] = 0 }
            touched.removeAll(keepingCapacity: true)
        }

        let training = SnapshotManifest.TrainingSummary(users: sequences.count, items: itemCount,
                                                        interactions: flat.count, source: source)
        let draft = TransitionModel(items: items, config: config, version: "", training: training,
                                    successorOffsets: successorOffsets, successorItems: successorItems,
                                    successorWeights: successorWeights, popularity: popularity)
        let version = (try? draft.snapshotWriter(metrics: [:]).contentVersion) ?? ""
        return draft.withVersion(version)
    }

    init(items: [String], config: TransitionConfig, version: String, training: SnapshotManifest.TrainingSummary,
         successorOffsets: [Int32], successorItems: [Int32], successorWeights: [Float], popularity: [Float]) {
        self.items = items
        self.config = config
        self.version = version
        self.training = training
        self.successorOffsets = successorOffsets
        self.successorItems = successorItems
        self.successorWeights = successorWeights
        self.popularity = popularity
        popularRanking = Array(0..<Int32(items.count)).sorted { a, b in
            popularity[Int(a)] != popularity[Int(b)] ? popularity[Int(a)] > popularity[Int(b)] : a < b
        }
    }

    private func withVersion(_ version: String) -> TransitionModel {
        TransitionModel(items: items, config: config, version: version, training: training,
                        successorOffsets: successorOffsets, successorItems: successorItems,
                        successorWeights: successorWeights, popularity: popularity)
    }

    /// Item `item`'s kept successors, heaviest first (empty for an unknown item).
    public func successors(of item: String) -> [(item: String, weight: Float)] {
        guard let row = items.firstIndex(of: item) else { return [] }
        return (Int(successorOffsets[row])..<Int(successorOffsets[row + 1])).map {
            (item: items[Int(successorItems[$0])], weight: successorWeights[$0])
        }
    }

    /// The most popular items of the training data, as external ids.
    public func popularItems(limit: Int) -> [String] {
        popularRanking.prefix(max(0, limit)).map { items[Int($0)] }
    }

    // MARK: snapshots

    private func snapshotWriter(metrics: [String: Double]) throws -> SnapshotWriter {
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: config.hyperParameters,
                                    training: training, metrics: metrics)
        try writer.add("successor_offsets", ints: successorOffsets, shape: [successorOffsets.count])
        try writer.add("successor_items", ints: successorItems, shape: [successorItems.count])
        try writer.add("successor_weights", floats: successorWeights, shape: [successorWeights.count])
        try writer.add("popularity", floats: popularity, shape: [popularity.count])
        return writer
    }

    /// Writes a snapshot; `metrics` (e.g. validation HR@10) are recorded in its manifest.
    public func save(to path: String, metrics: [String: Double] = [:]) throws {
        var writer = try snapshotWriter(metrics: metrics)
        if !version.isEmpty { writer.modelVersion = version }
        try writer.write(to: path)
    }

    public static func load(path: String) throws -> TransitionModel {
        try load(try Snapshot.read(path: path))
    }

    /// Checks the successor table as well as the file: a snapshot that passes its checksum can
    /// still come from a buggy writer, and a bad row index here would crash the service later.
    public static func load(_ snapshot: Snapshot) throws -> TransitionModel {
        let manifest = snapshot.manifest
        func refuse(_ problem: String) -> ModelError {
            ModelError(.badSnapshot, "snapshot \(snapshot.path): \(problem); retrain the model")
        }
        guard manifest.kind == kind else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): holds a '\(manifest.kind)' model, not a '\(kind)' model; load it with the matching model or pass a transition snapshot")
        }
        guard !manifest.modelVersion.isEmpty else { throw refuse("the manifest has no model version") }
        let itemCount = manifest.items.count
        let config = try TransitionConfig(hyperParameters: manifest.hyperParameters, path: snapshot.path)
        let offsets = try snapshot.ints("successor_offsets", shape: [itemCount + 1])
        let successorCount = Int(offsets.last ?? 0)
        let successorItems = try snapshot.ints("successor_items", shape: [successorCount])
        let successorWeights = try snapshot.floats("successor_weights", shape: [successorCount])
        let popularity = try snapshot.floats("popularity", shape: [itemCount])
        guard offsets.first == 0, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw refuse("successor_offsets do not start at 0 and rise")
        }
        guard successorItems.allSatisfy({ $0 >= 0 && Int($0) < itemCount }) else {
            throw refuse("successor_items name a row outside the \(itemCount)-item vocabulary")
        }
        guard successorWeights.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw refuse("successor_weights hold a value that is not a positive number")
        }
        guard popularity.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw refuse("popularity holds a value that is not a non-negative number")
        }
        guard Set(manifest.items).count == itemCount else { throw refuse("the item vocabulary lists an item twice") }
        return TransitionModel(items: manifest.items, config: config, version: manifest.modelVersion, training: manifest.training,
                               successorOffsets: offsets, successorItems: successorItems,
                               successorWeights: successorWeights, popularity: popularity)
    }

    // MARK: serving

    /// Binds the model to the service's vocabulary: `itemID` returns the vocabulary id of an
    /// external id (the service assigns and persists new ones). It is called once per model item.
    public func bind(itemID: (String) -> ItemID) -> TransitionRecommender {
        TransitionRecommender(model: self, vocabularyIDs: items.map(itemID))
    }
}

// MARK: full-catalogue scoring

extension TransitionModel: CatalogScorer {
    /// The recommender's ranking as dense scores over all rows: each row's transition score from
    /// the session's latest items, and below every one of them the popularity fill (popularity /
    /// max popularity, scaled to half the session's lowest transition score, or to 0.5 for a
    /// session without transitions). Ordered exactly as TransitionRecommender answers, with the
    /// same tie rule (smaller row first). Two differences of scale, not of order: the fill sits
    /// under the lowest transition score of the session rather than the lowest one returned, and
    /// the recency window counts the known rows passed in (callers drop unknown items first).
    public func scoreAll(histories: [[Int32]], into scores: UnsafeMutablePointer<Float>) {
        let itemCount = items.count
        guard itemCount > 0 else { return }
        let maxPopularity = max(popularRanking.first.map { popularity[Int($0)] } ?? 1, 1)
        for (index, history) in histories.enumerated() {
            let row = UnsafeMutableBufferPointer(start: scores + index * itemCount, count: itemCount)
            row.update(repeating: 0)
            var recency: Float = 1
            for item in history.suffix(config.historyItems).reversed() {
                defer { recency *= config.recencyDecay }
                guard item >= 0, Int(item) < itemCount else { continue }
                for entry in Int(successorOffsets[Int(item)])..<Int(successorOffsets[Int(item) + 1]) {
                    row[Int(successorItems[entry])] += recency * successorWeights[entry]
                }
            }
            // Weights and recencies are positive, so exactly the untouched rows are still 0.
            var lowest = Float.infinity
            for score in row where score > 0 { lowest = min(lowest, score) }
            let ceiling = 0.5 * (lowest.isFinite ? lowest : 1)
            for r in row.indices where row[r] == 0 {
                row[r] = ceiling * popularity[r] / maxPopularity
            }
        }
    }
}

/// A transition model answering in the service's ItemIDs.
public struct TransitionRecommender: Recommender {
    public let descriptor: ModelDescriptor
    private let model: TransitionModel
    /// Model row -> vocabulary id; 0 for a row that cannot be served (the vocabulary gave it 0,
    /// or an id another row already has), so answers never hold 0 or a duplicate.
    private let idOfRow: [ItemID]
    /// Vocabulary id -> model row. Ids the model never saw, however large, are simply absent.
    private let rowOfID: [ItemID: Int32]

    init(model: TransitionModel, vocabularyIDs: [ItemID]) {
        var idOfRow = vocabularyIDs
        var rowOfID: [ItemID: Int32] = [:]
        rowOfID.reserveCapacity(vocabularyIDs.count)
        for (row, id) in vocabularyIDs.enumerated() {
            if id == 0 || rowOfID[id] != nil {
                idOfRow[row] = 0
            } else {
                rowOfID[id] = Int32(row)
            }
        }
        self.model = model
        self.idOfRow = idOfRow
        self.rowOfID = rowOfID
        descriptor = ModelDescriptor(name: TransitionModel.kind, version: model.version)
    }

    public func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]] {
        // One dense accumulator per batch, reset entry by entry: no O(items) work per request.
        var scratch = Scratch(itemCount: model.items.count)
        return requests.map { answer($0, &scratch) }
    }

    private struct Scratch {
        var score: [Float]
        var touched: [Int32] = []
        init(itemCount: Int) { score = [Float](repeating: 0, count: itemCount) }
    }

    private func answer(_ request: RecommendationRequest, _ scratch: inout Scratch) -> [ScoredItem] {
        let k = min(request.k, model.items.count)
        guard k > 0 else { return [] }

        // Unknown ids still take their place in the window: age counts events, not known events.
        var recency: Float = 1
        for id in request.history.suffix(model.config.historyItems).reversed() {
            defer { recency *= model.config.recencyDecay }
            guard let row = rowOfID[id] else { continue }
            let start = Int(model.successorOffsets[Int(row)]), end = Int(model.successorOffsets[Int(row) + 1])
            for entry in start..<end {
                let successor = model.successorItems[entry]
                if scratch.score[Int(successor)] == 0 { scratch.touched.append(successor) }
                scratch.score[Int(successor)] += recency * model.successorWeights[entry]
            }
        }

        var top = TopK(k: k)
        for row in scratch.touched {
            let id = idOfRow[Int(row)]
            if id != 0 && !request.exclude.contains(id) {
                top.insert(score: scratch.score[Int(row)], id: Int(row))
            }
        }
        for row in scratch.touched { scratch.score[Int(row)] = 0 }
        scratch.touched.removeAll(keepingCapacity: true)

        let ranked = top.sorted()
        var answer = ranked.map { ScoredItem(item: idOfRow[$0.id], score: $0.score) }
        guard answer.count < k else { return answer }

        // Fewer transition candidates than k (all of them are in the answer by now): fill with
        // popular items, scaled to stay below the lowest transition score and keep their order.
        let chosenRows = Set(ranked.map(\.id))
        let ceiling = 0.5 * (answer.last?.score ?? 1)
        let maxPopularity = max(model.popularRanking.first.map { model.popularity[Int($0)] } ?? 1, 1)
        for row in model.popularRanking {
            let id = idOfRow[Int(row)]
            if id == 0 || chosenRows.contains(Int(row)) || request.exclude.contains(id) { continue }
            answer.append(ScoredItem(item: id, score: ceiling * model.popularity[Int(row)] / maxPopularity))
            if answer.count == k { break }
        }
        return answer
    }
}
