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

}

extension LLMSeqSimConfig: ModelSettings {
    public init() { self.init(aggregation: .mean) }

    /// The key table: snapshots, `train` flags and the `train.llmseqsim.*` config keys.
    public static let keys: [SettingKey<LLMSeqSimConfig>] = [
        .choice("aggregation", "session embedding: mean, or decay (recency-weighted)", \.aggregation),
        .double("half_life", "decay: items after which an item's weight halves", 1e-3...1e6, \.halfLife),
    ]
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

    public func snapshotWriter() throws -> SnapshotWriter {
        let (items, vectors) = lock.withLock { (rows, table) }
        var hyper = config.hyperParameters
        hyper["dimension"] = "\(dimension)"
        hyper["text_model_id"] = textModelID
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: hyper, training: training)
        try writer.add("item_vectors", floats: vectors, shape: [items.count, dimension])
        return writer
    }

    public func save(to path: String) throws {
        let writer = try snapshotWriter()
        try writer.write(to: path)
        version = writer.contentVersion
    }

    public static func load(_ snapshot: Snapshot) throws -> LLMSeqSim {
        let m = snapshot.manifest
        guard m.kind == kind else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): holds a '\(m.kind)' model, not '\(kind)'; pass an LLMSeqSim snapshot")
        }
        guard let d = Int(m.hyperParameters["dimension"] ?? ""), d > 0 else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): hyper-parameter dimension is missing or invalid; rebuild it with `streamrec train --model llmseqsim`")
        }
        let config = try LLMSeqSimConfig(hyperParameters: m.hyperParameters, path: snapshot.path)
        let vectors = try snapshot.floats("item_vectors", shape: [m.items.count, d])
        guard vectors.allSatisfy({ $0.isFinite }) else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): item_vectors holds NaN or infinite values; rebuild the embedding cache and the snapshot")
        }
        let model = LLMSeqSim(config: config, items: m.items, vectors: vectors,
                              dimension: d, textModelID: m.hyperParameters["text_model_id"] ?? "")
        model.version = m.modelVersion
        model.training = m.training
        return model
    }
}

/// LLMSeqSim's part of serving: cosine scores over every row; rows for new items are appended
/// from their text vectors (the serving adapter holds its lock across append and score).
public final class LLMSeqSimSessionScorer: SessionScorer, @unchecked Sendable {
    public let model: LLMSeqSim

    public init(model: LLMSeqSim) { self.model = model }

    public var rowCount: Int { model.items.count }
    public var textDimension: Int? { model.dimension }

    public func appendRows(items: [String], vectors: [Float]) -> Int { model.append(items: items, vectors: vectors) }

    public func score(users: [String], sessions: [[Int32]]) -> SessionScores { .dense(model, sessions: sessions) }
}

extension LLMSeqSim: CatalogueModel {
    public var kind: String { Self.kind }
    public func sessionScorer(_ options: ServingOptions) -> any SessionScorer { LLMSeqSimSessionScorer(model: self) }
}

/// LLMSeqSim in the catalogue. "Training" builds a snapshot of the dataset's item vectors (text
/// is not interaction data, so no holdout applies to the vectors).
public enum LLMSeqSimFamily: ModelFamily {
    public typealias Settings = LLMSeqSimConfig
    public static let name = LLMSeqSim.kind
    public static let kinds = [LLMSeqSim.kind]
    public static let summary = "LLMSeqSim (cosine between the session's and the items' text embeddings; no training)"

    public static func load(_ snapshot: Snapshot) throws -> any CatalogueModel { try LLMSeqSim.load(snapshot) }

    public static func train(_ job: TrainingJob, settings: LLMSeqSimConfig) throws -> TrainingResult {
        guard let embeddings = job.embeddings else {
            throw ModelError(.unsupported, "llmseqsim needs item text embeddings; pass --embeddings CACHE (make one with `streamrec embed --items DIR/items.tsv --out CACHE`)")
        }
        let cache = try EmbeddingCache.load(path: embeddings)
        let split = EncodedSplit(job.dataset)
        let sim = LLMSeqSim.build(cache: cache, items: split.items, config: settings)
        sim.training = .init(users: job.dataset.sequences.count, items: sim.items.count, interactions: 0, source: job.source)
        let missing = split.items.count - sim.items.count
        let summary = "built llmseqsim over \(sim.items.count) items (\(missing) without a vector left out), \(settings.aggregation.rawValue) aggregation"
        return TrainingResult(model: sim, summary: summary, reportSettings: settings.hyperParameters)
    }
}
