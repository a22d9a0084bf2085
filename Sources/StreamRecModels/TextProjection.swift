// PCA from the text-embedding space to a model's width, for LLM2SASRec (arXiv 2402.01339, the
// paper reduces the LLM embeddings with PCA) and for projecting items that arrive later; also
// what DiffuRec's `--embeddings` reduces its item vectors with.
//
// Shape legend
//   N  items with a text vector      D  text width (384)      d  model width (64)
//
//   mu [D]      = mean of the rows of X [N,D]
//   C  [D,D]    = (X - mu)^T (X - mu) / (N - 1)                one sgemm
//   W  [D,d]    = top-d eigenvectors of C: subspace iteration Q <- orth(C Q) (modified
//                 Gram-Schmidt), until the Rayleigh quotients settle; columns sorted by
//                 eigenvalue, each signed so its largest entry is positive (deterministic)
//   project(x)  = scale * (x - mu) W                             [d]
//   scale       = sqrt(2 / (V + d)) / sqrt(mean_k lambda_k): the projected table then has the
//                 per-element RMS of SASRec's Xavier-normal init for item_embedding [V,d], so
//                 sqrt(d) scaling, positions and layer norms see the magnitudes they were tuned
//                 for, while the components keep their relative variances (the PCA geometry).
import Foundation
import StreamRecNumerics

public struct TextProjection: Sendable, Equatable {
    public let mean: [Float]
    /// [D, d], row-major.
    public let components: [Float]
    public let scale: Float
    public let textModelID: String

    public var textDimension: Int { mean.count }
    public var width: Int { components.count / max(1, mean.count) }

    public init(mean: [Float], components: [Float], scale: Float, textModelID: String) {
        precondition(!mean.isEmpty && components.count % mean.count == 0)
        self.mean = mean
        self.components = components
        self.scale = scale
        self.textModelID = textModelID
    }

    /// rows [n, D] -> [n, d].
    public func project(_ rows: [Float]) -> [Float] {
        let D = textDimension, d = width, n = rows.count / D
        var centered = rows
        for r in 0..<n { for j in 0..<D { centered[r * D + j] -= mean[j] } }
        var out = [Float](repeating: 0, count: n * d)
        centered.withUnsafeBufferPointer { x in
            components.withUnsafeBufferPointer { w in
                out.withUnsafeMutableBufferPointer { o in
                    BLAS.gemm(m: n, n: d, k: D, alpha: scale, a: x.baseAddress!, lda: D, b: w.baseAddress!, ldb: d, c: o.baseAddress!, ldc: d)
                }
            }
        }
        return out
    }

    /// PCA of `rows` [n, D]: the mean, the top `width` components [D, width] and their eigenvalues.
    public static func principalComponents(_ rows: [Float], dimension D: Int, width d: Int, seed: UInt64 = 7,
                                           maxIterations: Int = 500) -> (mean: [Float], components: [Float], eigenvalues: [Float]) {
        let n = rows.count / D
        precondition(n >= 2 && d >= 1 && d <= D, "PCA needs at least 2 rows and 1 <= width <= dimension")
        var mean = [Float](repeating: 0, count: D)
        for r in 0..<n { for j in 0..<D { mean[j] += rows[r * D + j] } }
        for j in 0..<D { mean[j] /= Float(n) }
        var x = rows
        for r in 0..<n { for j in 0..<D { x[r * D + j] -= mean[j] } }
        var cov = [Float](repeating: 0, count: D * D)
        x.withUnsafeBufferPointer { xp in
            cov.withUnsafeMutableBufferPointer { c in
                BLAS.gemm(transA: true, m: D, n: D, k: n, alpha: 1 / Float(n - 1), a: xp.baseAddress!, lda: D, b: xp.baseAddress!, ldb: D,
                          c: c.baseAddress!, ldc: D)
            }
        }
        var rng = RandomSource(seed: seed)
        var q = (0..<(D * d)).map { _ in rng.normal() }
        orthonormalizeColumns(&q, rows: D, cols: d)
        var z = [Float](repeating: 0, count: D * d)
        var previous = [Float](repeating: 0, count: d)
        var eigen = [Float](repeating: 0, count: d)
        for _ in 0..<maxIterations {
            multiply(cov, q, into: &z, D: D, d: d)
            // Rayleigh quotients q_k^T C q_k, from the product already computed.
            for k in 0..<d {
                var s: Float = 0
                for i in 0..<D { s += q[i * d + k] * z[i * d + k] }
                eigen[k] = s
            }
            q = z
            orthonormalizeColumns(&q, rows: D, cols: d)
            let change = zip(eigen, previous).map { abs($0 - $1) }.max() ?? 0
            if change <= 1e-7 * max(1e-12, eigen.map(abs).max() ?? 1) { break }
            previous = eigen
        }
        // Sort by eigenvalue, sign-fix each column.
        let order = (0..<d).sorted { eigen[$0] > eigen[$1] }
        var sorted = [Float](repeating: 0, count: D * d)
        for (newK, k) in order.enumerated() {
            var peak: Float = 0
            for i in 0..<D where abs(q[i * d + k]) > abs(peak) { peak = q[i * d + k] }
            let sign: Float = peak < 0 ? -1 : 1
            for i in 0..<D { sorted[i * d + newK] = sign * q[i * d + k] }
        }
        return (mean, sorted, order.map { max(0, eigen[$0]) })
    }

    /// Fits the projection to `rows` [n, D] and scales it to SASRec's init for a [items, width] table.
    public static func fit(_ rows: [Float], dimension D: Int, width d: Int, tableRows: Int, textModelID: String) -> TextProjection {
        let (mean, components, eigenvalues) = principalComponents(rows, dimension: D, width: d)
        let meanVariance = eigenvalues.reduce(0, +) / Float(d)
        let xavier = (2 / Float(tableRows + d)).squareRoot()
        let scale = meanVariance > 0 ? xavier / meanVariance.squareRoot() : 1
        return TextProjection(mean: mean, components: components, scale: scale, textModelID: textModelID)
    }

    private static func multiply(_ cov: [Float], _ q: [Float], into z: inout [Float], D: Int, d: Int) {
        cov.withUnsafeBufferPointer { c in
            q.withUnsafeBufferPointer { qp in
                z.withUnsafeMutableBufferPointer { zp in
                    BLAS.gemm(m: D, n: d, k: D, a: c.baseAddress!, lda: D, b: qp.baseAddress!, ldb: d, c: zp.baseAddress!, ldc: d)
                }
            }
        }
    }

    /// Modified Gram-Schmidt on the columns of a row-major [rows, cols] matrix, in double and
    /// twice ("twice is enough": one float pass leaves near-null columns of rank-deficient data
    /// visibly non-orthogonal). A column with nothing left becomes a unit axis, which the second
    /// pass makes orthogonal to the others.
    static func orthonormalizeColumns(_ m: inout [Float], rows: Int, cols: Int) {
        var a = m.map(Double.init)
        for _ in 0..<2 {
            for k in 0..<cols {
                for p in 0..<k {
                    var dot = 0.0
                    for i in 0..<rows { dot += a[i * cols + p] * a[i * cols + k] }
                    for i in 0..<rows { a[i * cols + k] -= dot * a[i * cols + p] }
                }
                var norm = 0.0
                for i in 0..<rows { norm += a[i * cols + k] * a[i * cols + k] }
                norm = norm.squareRoot()
                if norm > 1e-30 {
                    for i in 0..<rows { a[i * cols + k] /= norm }
                } else {
                    for i in 0..<rows { a[i * cols + k] = i == k % rows ? 1 : 0 }
                }
            }
        }
        m = a.map(Float.init)
    }
}

extension TextProjection {
    /// LLM2SASRec, LLM2BERT4Rec: replaces the rows [items.count, d] of `table` of items with a
    /// text vector by their PCA projection (fitted on those vectors), keeps the random init for
    /// the others, and returns the projection (so later items are projected the same way) and
    /// the rows set.
    public static func initialize(table: UnsafeMutablePointer<Float>, items: [String], width d: Int, widthKey: String,
                                  from cache: EmbeddingCache) throws -> (projection: TextProjection, rows: [Int]) {
        let (vectors, present) = cache.matrix(for: items)
        let rowsWithText = present.indices.filter { present[$0] }
        guard rowsWithText.count > d else {
            throw ModelError(.badData, "only \(rowsWithText.count) of the \(items.count) items have a text embedding in the cache; PCA to width \(d) needs more than \(d). Embed the dataset's items.tsv with `streamrec embed`")
        }
        let D = cache.dimension
        guard d <= D else {
            throw ModelError(.badData, "the text embeddings have \(D) dimensions, fewer than the model width \(d); PCA cannot widen them. Lower the width (\(widthKey)) or use a wider encoder")
        }
        var fitRows = [Float](); fitRows.reserveCapacity(rowsWithText.count * D)
        for r in rowsWithText { fitRows.append(contentsOf: vectors[(r * D)..<((r + 1) * D)]) }
        let projection = TextProjection.fit(fitRows, dimension: D, width: d, tableRows: items.count, textModelID: cache.modelID)
        let projected = projection.project(fitRows)
        for (i, r) in rowsWithText.enumerated() {
            for j in 0..<d { table[r * d + j] = projected[i * d + j] }
        }
        return (projection, rowsWithText)
    }

    /// Records the projection in a snapshot (tensors text_projection.*, hyper-parameters
    /// init, text_model_id, text_projection_scale).
    public func add(to writer: inout SnapshotWriter, initName: String) throws {
        writer.hyperParameters["init"] = initName
        writer.hyperParameters["text_model_id"] = textModelID
        writer.hyperParameters["text_projection_scale"] = "\(scale)"
        try writer.add("text_projection.mean", floats: mean, shape: [textDimension])
        try writer.add("text_projection.components", floats: components, shape: [textDimension, width])
    }

    /// The projection a snapshot records, nil when it has none.
    public static func load(from snapshot: Snapshot, width: Int) throws -> TextProjection? {
        guard let entry = snapshot.tensor(named: "text_projection.components") else { return nil }
        let D = entry.shape.first ?? 0
        let p = snapshot.manifest.hyperParameters
        guard entry.shape == [D, width], D > 0, let scale = Float(p["text_projection_scale"] ?? "") else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): text_projection.components has shape \(entry.shape) (expected [D, \(width)]) or the scale is missing; retrain the model")
        }
        return TextProjection(mean: try snapshot.floats("text_projection.mean", shape: [D]),
                              components: try snapshot.floats("text_projection.components", shape: [D, width]),
                              scale: scale, textModelID: p["text_model_id"] ?? "")
    }
}

/// Holds text-started item rows near their start while training: L2-SP (Li, Grandvalet & Davoine,
/// "Explicit inductive bias for transfer learning", ICML 2018) with the text start as the prior,
/// up to one common scale.
///
///   alpha     = <E, A> / <A, A>                           over the anchored rows (the best scale)
///   penalty   = (lambda / 2) * sum_r ||E_r - alpha A_r||^2   r: rows started from text, A_r their start
///   gradient  = lambda * (E_r - alpha A_r)                 (alpha is optimal, so d penalty / d alpha = 0)
///
/// Why: with the full softmax every row gets a gradient at every step as a negative, and Adam
/// scales even a tiny steady gradient up to a full step, so a rare item's row drifts from its
/// text start although the data say little about it (the start "fades": LLM2SASRec converged
/// on Beauty ties SASRec). The pull is added to the gradient, not decoupled, on purpose: where
/// the data speak (popular items) their gradient dominates, where they barely do the pull does.
/// The common scale lets the table grow as training needs (logits sharpen): anchored at the
/// start's own small scale (the init's), the pull acted as a weight decay and slowed training
/// (Beauty pilots, docs/benchmarks.md).
public struct TextAnchor: Sendable {
    public let strength: Float
    public let width: Int
    public let rows: [Int]
    /// A_r, [rows.count, width].
    let start: [Float]
    /// <A, A>, fixed: computed once, not at every step.
    let startNormSquared: Double

    /// Anchors `rows` of `table` [*, width] at their current values.
    public init(table: Tensor, rows: [Int], width: Int, strength: Float) {
        self.strength = strength
        self.width = width
        self.rows = rows
        var start = [Float](repeating: 0, count: rows.count * width)
        for (i, r) in rows.enumerated() {
            for j in 0..<width { start[i * width + j] = table.data[r * width + j] }
        }
        self.start = start
        startNormSquared = start.reduce(0.0) { $0 + Double($1) * Double($1) }
    }

    /// alpha = <E, A> / <A, A> over the anchored rows.
    public func scale(_ table: Tensor) -> Float {
        var ea = 0.0
        for (i, r) in rows.enumerated() {
            for j in 0..<width { ea += Double(table.data[r * width + j]) * Double(start[i * width + j]) }
        }
        return startNormSquared > 0 ? Float(ea / startNormSquared) : 0
    }

    /// (lambda / 2) * sum_r ||E_r - alpha A_r||^2.
    public func penalty(_ table: Tensor) -> Double {
        let alpha = scale(table)
        var sum = 0.0
        for (i, r) in rows.enumerated() {
            for j in 0..<width {
                let e = Double(table.data[r * width + j] - alpha * start[i * width + j])
                sum += e * e
            }
        }
        return Double(strength) / 2 * sum
    }

    /// table.grad += lambda * (E - alpha A) on the anchored rows.
    public func addGradient(to table: Tensor) {
        guard strength > 0 else { return }
        let alpha = scale(table)
        let e = table.data, g = table.grad
        for (i, r) in rows.enumerated() {
            for j in 0..<width { g[r * width + j] += strength * (e[r * width + j] - alpha * start[i * width + j]) }
        }
    }
}

extension TextStartSettings {
    /// The anchor for the rows a text start set, or nil when the setting is off; an anchor
    /// without a text start is a configuration error.
    func anchor(table: Tensor, rows: [Int]?, width: Int, family: String, llmKind: String) throws -> TextAnchor? {
        guard textAnchor > 0 else { return nil }
        guard let rows else {
            throw ModelError(.unsupported, "train.\(family).text_anchor \(textAnchor) needs a text start to hold the rows to; train --model \(llmKind) with --embeddings, or set it to 0")
        }
        return TextAnchor(table: table, rows: rows, width: width, strength: textAnchor)
    }
}

extension TrainingJob {
    /// LLM2SASRec, LLM2BERT4Rec: when the job is `llmKind`, starts the item rows of `table`
    /// (row i = items[i]) from the job's text embeddings (TextProjection.initialize) and logs it;
    /// nil for the plain kind. The note is the report's "init".
    func textStart(_ llmKind: String, table: Tensor, items: [String], width: Int,
                   widthKey: String) throws -> (projection: TextProjection, rows: [Int], note: String)? {
        guard kind == llmKind else { return nil }
        guard let embeddings else {
            throw ModelError(.unsupported, "\(llmKind) needs item text embeddings; pass --embeddings CACHE (make one with `streamrec embed --items DIR/items.tsv --out CACHE`)")
        }
        let cache = try EmbeddingCache.load(path: embeddings)
        let (projection, rows) = try TextProjection.initialize(table: table.data, items: items, width: width, widthKey: widthKey, from: cache)
        log("\(llmKind): \(rows.count) of \(items.count) item embeddings initialised from text (PCA \(cache.dimension) -> \(width), scale \(String(format: "%.4g", projection.scale)))")
        return (projection, rows, "\(llmKind) (\(embeddings))")
    }
}
