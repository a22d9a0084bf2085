// LLMSeqSim (Boz et al., "Improving Sequential Recommendations with LLMs", arXiv 2402.01339):
// recommend the items whose text embedding is closest to the session's. No training.
//
// Shape legend
//   V  items (rows)      D  text-embedding width (384)      B  sessions in a batch
//
//   E [V,D]   item text embeddings, each row scaled to unit length at load (so imported,
//             unnormalised vectors rank by cosine too)
//   s [B,D]   session = sum_i w_i E[h_i] over the session's items, then unit length
//             mean:  w_i = 1
//             decay: w_i = 0.5^((n-1-i)/halfLife), the newest item weighs 1 (the paper's
//                    recency-weighted variant; halfLife counted in items)
//   scores    = s E^T [B,V]: cosine similarity (one sgemv for B = 1, else one sgemm)
// The session's own items score ~1 and must be excluded: the evaluator's history-excluded
// protocol and the service's `recommend.exclude` do that.
//
// Serving: new items (text embedded from the `items` topic) are appended as rows under a lock,
// between micro-batches; nothing else depends on V, so nothing is invalidated.
import Foundation
import StreamRecNumerics

public struct LLMSeqSimConfig: Sendable, Equatable {
    public enum Aggregation: String, Sendable, CaseIterable {
        case mean
        case decay
    }
    public var aggregation: Aggregation = .mean
    /// decay only: items after which an item's weight has halved.
    public var halfLife: Double = 3

    public init(aggregation: Aggregation = .mean, halfLife: Double = 3) {
        self.aggregation = aggregation
        self.halfLife = halfLife
    }

    var hyperParameters: [String: String] { ["aggregation": aggregation.rawValue, "half_life": "\(halfLife)"] }
}

public final class LLMSeqSim: CatalogScorer, @unchecked Sendable {
    public static let kind = "llmseqsim"

    public let config: LLMSeqSimConfig
    public let dimension: Int
    /// The encoder the vectors came from (EmbeddingCache.modelID).
    public let textModelID: String
    public var version = ""
    public var training = SnapshotManifest.TrainingSummary(users: 0, items: 0, interactions: 0, source: "")

    private let lock = NSLock()
    private var rows: [String]
    private var table: [Float]

    /// `vectors` [items.count, dimension]; rows are normalised here (a zero row stays zero).
    public init(config: LLMSeqSimConfig, items: [String], vectors: [Float], dimension: Int, textModelID: String) {
        precondition(vectors.count == items.count * dimension, "LLMSeqSim: \(vectors.count) values for \(items.count) x \(dimension)")
        self.config = config
        self.dimension = dimension
        self.textModelID = textModelID
        rows = items
        table = vectors
        Self.normalizeRows(&table, dimension: dimension)
    }

    /// The model over `items` (all of the cache when nil); items without a vector are left out,
    /// so the evaluator counts them as unknown targets rather than ranking a zero vector.
    public static func build(cache: EmbeddingCache, items: [String]? = nil, config: LLMSeqSimConfig = .init()) -> LLMSeqSim {
        let wanted = (items ?? cache.items).filter { cache.row(of: $0) != nil }
        let (vectors, _) = cache.matrix(for: wanted)
        return LLMSeqSim(config: config, items: wanted, vectors: vectors, dimension: cache.dimension, textModelID: cache.modelID)
    }

    static func normalizeRows(_ table: inout [Float], dimension d: Int) {
        let n = table.count / max(1, d)
        table.withUnsafeMutableBufferPointer { t in
            for r in 0..<n {
                let row = t.baseAddress! + r * d
                let norm = BLAS.dot(d, row, row).squareRoot()
                if norm > 0 { for j in 0..<d { row[j] /= norm } }
            }
        }
    }

    public var items: [String] { lock.withLock { rows } }

    /// Appends rows (already in this model's text space); returns the first new row.
    @discardableResult
    public func append(items newItems: [String], vectors: [Float]) -> Int {
        precondition(vectors.count == newItems.count * dimension)
        var normalized = vectors
        Self.normalizeRows(&normalized, dimension: dimension)
        return lock.withLock {
            let first = rows.count
            rows.append(contentsOf: newItems)
            table.append(contentsOf: normalized)
            return first
        }
    }

    /// Session vectors [B, D], unit length (zero for an empty history). Rows out of range are skipped.
    func sessionVectors(_ histories: [[Int32]], table: UnsafePointer<Float>, rowCount: Int) -> [Float] {
        let d = dimension
        var out = [Float](repeating: 0, count: histories.count * d)
        out.withUnsafeMutableBufferPointer { o in
            for (b, history) in histories.enumerated() {
                let s = o.baseAddress! + b * d
                let n = history.count
                for (i, row) in history.enumerated() where row >= 0 && Int(row) < rowCount {
                    let w: Float = config.aggregation == .mean ? 1 : Float(pow(0.5, Double(n - 1 - i) / max(1e-6, config.halfLife)))
                    BLAS.axpy(d, w, table + Int(row) * d, s)
                }
                let norm = BLAS.dot(d, s, s).squareRoot()
                if norm > 0 { for j in 0..<d { s[j] /= norm } }
            }
        }
        return out
    }

    /// scores [B, V] for the rows the model has now; V = `items.count` at the time of the call.
    public func scoreAll(histories: [[Int32]], into scores: UnsafeMutablePointer<Float>) {
        lock.withLock {
            let v = rows.count, d = dimension
            table.withUnsafeBufferPointer { t in
                let sessions = sessionVectors(histories, table: t.baseAddress!, rowCount: v)
                sessions.withUnsafeBufferPointer { s in
                    if histories.count == 1 {
                        BLAS.gemv(m: v, n: d, a: t.baseAddress!, lda: d, x: s.baseAddress!, y: scores)
                    } else {
                        Parallel.gemm(transB: true, m: histories.count, n: v, k: d, a: s.baseAddress!, lda: d,
                                      b: t.baseAddress!, ldb: d, c: scores, ldc: v)
                    }
                }
            }
        }
    }

    // MARK: - snapshots

    public func save(to path: String) throws {
        let (items, vectors) = lock.withLock { (rows, table) }
        var hyper = config.hyperParameters
        hyper["dimension"] = "\(dimension)"
        hyper["text_model_id"] = textModelID
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: hyper, training: training)
        try writer.add("item_vectors", floats: vectors, shape: [items.count, dimension])
        try writer.write(to: path)
        version = writer.contentVersion
    }

    public static func load(_ snapshot: Snapshot) throws -> LLMSeqSim {
        let m = snapshot.manifest
        guard m.kind == kind else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): holds a '\(m.kind)' model, not '\(kind)'; pass an LLMSeqSim snapshot")
        }
        guard let d = Int(m.hyperParameters["dimension"] ?? ""), d > 0,
              let aggregation = LLMSeqSimConfig.Aggregation(rawValue: m.hyperParameters["aggregation"] ?? ""),
              let halfLife = Double(m.hyperParameters["half_life"] ?? ""), halfLife > 0 else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): hyper-parameters dimension, aggregation or half_life are missing or invalid; rebuild it with `streamrec train --model llmseqsim`")
        }
        let vectors = try snapshot.floats("item_vectors", shape: [m.items.count, d])
        guard vectors.allSatisfy({ $0.isFinite }) else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): item_vectors holds NaN or infinite values; rebuild the embedding cache and the snapshot")
        }
        let model = LLMSeqSim(config: .init(aggregation: aggregation, halfLife: halfLife), items: m.items, vectors: vectors,
                              dimension: d, textModelID: m.hyperParameters["text_model_id"] ?? "")
        model.version = m.modelVersion
        model.training = m.training
        return model
    }

    public func bind(itemID: (String) -> ItemID) -> LLMSeqSimRecommender {
        LLMSeqSimRecommender(model: self, itemID: itemID)
    }
}

/// A recommender that can take items it has never seen, given their text embedding (the
/// `items` topic): LLMSeqSim directly, SASRec through its text projection.
public protocol ItemExtensibleRecommender: Recommender {
    /// Width of the text vectors `addItems` takes; nil when this model cannot add items.
    var textDimension: Int? { get }
    /// Whether the model ranks this item already.
    func knows(_ item: ItemID) -> Bool
    /// Makes the items rankable from the next call on. Items already known are skipped.
    func addItems(_ items: [(id: ItemID, external: String, textVector: [Float])])
}

/// LLMSeqSim answering the service: service ids to rows and back, exclusion, top-K.
public final class LLMSeqSimRecommender: ItemExtensibleRecommender, @unchecked Sendable {
    public let descriptor: ModelDescriptor
    public let model: LLMSeqSim
    private let lock = NSLock()
    private var serviceIDs: [ItemID]
    private var rowOf: [ItemID: Int32]

    init(model: LLMSeqSim, itemID: (String) -> ItemID) {
        self.model = model
        serviceIDs = model.items.map(itemID)
        var rowOf: [ItemID: Int32] = [:]
        for (row, id) in serviceIDs.enumerated() { rowOf[id] = Int32(row) }
        self.rowOf = rowOf
        descriptor = ModelDescriptor(name: LLMSeqSim.kind, version: model.version)
    }

    public var textDimension: Int? { model.dimension }

    public func knows(_ item: ItemID) -> Bool { lock.withLock { rowOf[item] != nil } }

    public func addItems(_ items: [(id: ItemID, external: String, textVector: [Float])]) {
        lock.withLock {
            let fresh = items.filter { rowOf[$0.id] == nil && $0.textVector.count == model.dimension }
            guard !fresh.isEmpty else { return }
            let first = model.append(items: fresh.map(\.external), vectors: fresh.flatMap(\.textVector))
            for (i, item) in fresh.enumerated() {
                rowOf[item.id] = Int32(first + i)
                serviceIDs.append(item.id)
            }
        }
    }

    public func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]] {
        guard !requests.isEmpty else { return [] }
        // Held for the whole call: an append waits for the batch to finish (between micro-batches).
        return lock.withLock {
            let v = serviceIDs.count
            // Items the model has no text for are skipped in the session (never an error).
            let histories = requests.map { $0.history.compactMap { rowOf[$0] } }
            var scores = [Float](repeating: 0, count: requests.count * v)
            scores.withUnsafeMutableBufferPointer { model.scoreAll(histories: histories, into: $0.baseAddress!) }
            return requests.enumerated().map { i, request in
                var top = TopK(k: request.k)
                guard !histories[i].isEmpty else { return [] }
                for row in 0..<v {
                    let score = scores[i * v + row]
                    if let floor = top.threshold, score < floor { continue }
                    if request.exclude.contains(serviceIDs[row]) { continue }
                    top.insert(score: score, id: row)
                }
                return top.sorted().map { ScoredItem(item: serviceIDs[$0.id], score: $0.score) }
            }
        }
    }
}
