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
}

extension TransitionConfig: ModelSettings {
    public init() { self.init(window: 3) }

    /// The key table: snapshots, `train` flags and the `train.transition.*` config keys.
    public static let keys: [SettingKey<TransitionConfig>] = [
        .int("window", "following items that count as successors (weights 1, 1/2, 1/3, ...)", 1...1_000, \.window),
        .int("successors_per_item", "successors kept per item", 1...100_000, \.successorsPerItem, aliases: ["successors"]),
        .int("history_items", "latest session items scored", 1...10_000, \.historyItems),
        .float("recency_decay", "weight of an item of age a is recency_decay^a", 1e-6...1, \.recencyDecay),
    ]
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

    public func snapshotWriter() throws -> SnapshotWriter { try snapshotWriter(metrics: [:]) }

    private func snapshotWriter(metrics: [String: Double]) throws -> SnapshotWriter {
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: config.hyperParameters,
                                    training: training, metrics: metrics)
        if !version.isEmpty { writer.modelVersion = version }
        try writer.add("successor_offsets", ints: successorOffsets, shape: [successorOffsets.count])
        try writer.add("successor_items", ints: successorItems, shape: [successorItems.count])
        try writer.add("successor_weights", floats: successorWeights, shape: [successorWeights.count])
        try writer.add("popularity", floats: popularity, shape: [popularity.count])
        return writer
    }

    /// Writes a snapshot; `metrics` (e.g. validation HR@10) are recorded in its manifest.
    public func save(to path: String, metrics: [String: Double] = [:]) throws {
        try snapshotWriter(metrics: metrics).write(to: path)
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
}

// MARK: full-catalogue scoring

extension TransitionModel: CatalogScorer {
    /// The recommender's ranking as dense scores over all rows: each row's transition score from
    /// the session's latest items, and below every one of them the popularity fill (popularity /
    /// max popularity, scaled to half the session's lowest transition score, or to 0.5 for a
    /// session without transitions). Ordered as the serving adapter answers, up to ties: equal
    /// transition scores go to the smaller row in both, equal popularity to the smaller row here
    /// and the smaller external id there. One difference of scale, not of order: the fill sits
    /// under the lowest transition score of the session rather than the lowest one returned.
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

/// The transition model's part of serving: sparse candidates, the successors of the session's
/// latest items weighted by recency (the serving adapter fills up to k with popular items).
public final class TransitionSessionScorer: SessionScorer, @unchecked Sendable {
    public let model: TransitionModel
    /// One dense accumulator, reset entry by entry: no O(items) work per session.
    private var accumulator: [Float]
    private var touched: [Int32] = []

    public init(model: TransitionModel) {
        self.model = model
        accumulator = [Float](repeating: 0, count: model.items.count)
    }

    public var rowCount: Int { model.items.count }

    public func score(users: [String], sessions: [[Int32]]) -> SessionScores {
        .sparse(sessions.map { session in
            var recency: Float = 1
            for row in session.suffix(model.config.historyItems).reversed() {
                defer { recency *= model.config.recencyDecay }
                let start = Int(model.successorOffsets[Int(row)]), end = Int(model.successorOffsets[Int(row) + 1])
                for entry in start..<end {
                    let successor = model.successorItems[entry]
                    if accumulator[Int(successor)] == 0 { touched.append(successor) }
                    accumulator[Int(successor)] += recency * model.successorWeights[entry]
                }
            }
            let candidates = touched.map { (row: $0, score: accumulator[Int($0)]) }
            for row in touched { accumulator[Int(row)] = 0 }
            touched.removeAll(keepingCapacity: true)
            return candidates
        })
    }
}

extension TransitionModel: CatalogueModel {
    public var kind: String { Self.kind }
    public var ownPopularity: [Float]? { popularity }
    public func sessionScorer(_ options: ServingOptions) -> any SessionScorer { TransitionSessionScorer(model: self) }
}

/// The transition model in the catalogue: rebuilt from counts, no epochs.
public enum TransitionFamily: ModelFamily {
    public typealias Settings = TransitionConfig
    public static let name = TransitionModel.kind
    public static let kinds = [TransitionModel.kind]
    public static let summary = "item-to-item transitions with recency weights (counts; trains in seconds)"

    public static func load(_ snapshot: Snapshot) throws -> any CatalogueModel { try TransitionModel.load(snapshot) }

    public static func train(_ job: TrainingJob, settings: TransitionConfig) throws -> TrainingResult {
        let sequences = job.trainingSequences
        let model = TransitionModel.train(sequences: sequences, config: settings, source: job.source)
        let interactions = sequences.reduce(0) { $0 + $1.count }
        return TrainingResult(model: model, summary: "trained transition on \(sequences.count) sequences (\(interactions) interactions, holdout \(job.holdout.rawValue))",
                              reportSettings: settings.hyperParameters,
                              warmStart: job.current.map { _ in "transition models are rebuilt from counts (no warm start)" })
    }
}
