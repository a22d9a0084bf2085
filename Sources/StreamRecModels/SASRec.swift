// SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), pre-LN as in
// the authors' reference code, with tied input/output item embeddings.
//
// Shape legend
//   V  items (model rows)         d  width (64)          H  heads (1)
//   L  max positions (200/50)     f  FFN width (= d, as in the paper)
//   B  sequences in a batch       T  positions in a packed batch (sum of lengths, no padding)
//
// Forward, for a packed batch of windows (each window's positions count from 0):
//   x   [T,d]  = E[item] * sqrt(d) + P[pos]           -> dropout
//   per block: x += dropout(Attn(LN1(x) Wqkv + bqkv) Wo + bo)          causal, per sequence
//              x += dropout(relu(LN2(x) W1 + b1) -> dropout -> W2 + b2)
//   h   [T,d]  = LNf(x)
//   scores     = h E^T  [T,V]  (training: fused into the loss, never materialised)
// Serving a full pass needs only each window's last row [B,d]: the final block computes K and V
// for every position, and the query, Wo, FFN and LNf for the last row alone (`lastOnly`).
//
// LLM2SASRec (kind llm2sasrec, arXiv 2402.01339 sec. 4): E starts from the PCA of the items'
// text embeddings (TextProjection.swift); text_anchor > 0 also adds lambda (E_r - alpha A_r) to
// E's gradient while training (TextAnchor: L2-SP toward the text start A, up to one scale alpha).
//
// Parameters: one contiguous buffer, in the order of `parameterSpecs` (the snapshot's tensors).
//
// Position scheme: LEFT-aligned. A session's first item in the window is position 0, so an
// arriving item takes the next position and nothing already computed moves (the incremental
// path caches each layer's keys and values). A window holds at most L items; see
// SASRecServing.swift for what happens when a session outgrows it.
import Foundation
import StreamRecNumerics

public struct SASRecConfig: Sendable, Equatable, Codable {
    public enum Loss: String, Sendable, Codable, CaseIterable {
        /// Full softmax cross-entropy over all items (Klenitskiy & Vasilev 2023): the default.
        case crossEntropy = "ce"
        /// The paper's binary cross-entropy with one sampled negative per position.
        case binary = "bce"
        /// Softmax over the target and `negatives` shared sampled items.
        case sampledSoftmax = "sampled"
    }

    /// d
    public var width = 64
    public var blocks = 2
    public var heads = 1
    /// f; 0 means "same as width" (the paper's point-wise FFN).
    public var ffnWidth = 0
    /// L: 200 for ML-1M, 50 for Beauty (the paper's settings).
    public var maxLength = 200
    public var dropout: Float = 0.2
    public var loss: Loss = .crossEntropy
    /// Shared negatives per batch for sampledSoftmax.
    public var negatives = 256
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0
    public var batchSize = 128
    public var epochs = 200
    /// Validate every this many epochs; stop after `patience` validations without improvement.
    public var evalEvery = 5
    public var patience = 4
    /// Global gradient-norm clip; 0 disables.
    public var clipNorm: Float = 0
    public var seed: UInt64 = 42
    /// Initialisation: 0 = Xavier-normal per matrix; > 0 = N(0, initStd^2) for every matrix and
    /// embedding (0.02 is the RecBole / Klenitskiy & Vasilev choice).
    public var initStd: Float = 0
    /// Training windows per sequence: 1 = each sequence's last L+1 items (the paper's); n > 1 also
    /// trains on the earlier history of sequences longer than L+1, cut into consecutive windows of
    /// L targets from the end (at most n per sequence); 0 = every window. Each window starts at
    /// position 0, as a rebuilt serving window does.
    public var trainWindows = 1
    /// LLM2SASRec: pull of the text-started item rows back to their start (TextAnchor); 0 = off.
    public var textAnchor: Float = 0

    public init() {}

    var ffn: Int { ffnWidth > 0 ? ffnWidth : width }
}

extension SASRecConfig: TrainingLoopSettings, TextStartSettings {
    /// The key table: snapshots, `train` flags and the `train.sasrec.*` config keys.
    public static let keys: [SettingKey<SASRecConfig>] = SettingKey.trainingLoop() + [
        .int("width", "width d (a multiple of heads)", 2...4096, \.width),
        .int("blocks", "transformer blocks", 1...64, \.blocks),
        .int("heads", "attention heads", 1...64, \.heads),
        .ffnWidth("FFN width f (0 = width, the paper's)", \.ffnWidth) { $0.ffn },
        .int("max_length", "max sequence length L (200: ML-1M, 50: Beauty)", 2...100_000, \.maxLength),
        .float("dropout", "dropout rate", 0...0.95, \.dropout),
        .choice("loss", "ce (full softmax), bce (one sampled negative, the paper's) or sampled (shared negatives)", \.loss),
        .int("negatives", "shared negatives per batch for loss sampled", 1...1_000_000, \.negatives),
        .float("init_std", "initialisation: 0 = Xavier-normal per matrix; > 0 = N(0, std^2) for every matrix and embedding (e.g. 0.02)", 0...10, \.initStd),
        .int("train_windows", "training windows per sequence: 1 = the last L+1 items (the paper's); n = also up to n-1 earlier windows; 0 = all", 0...1_000_000, \.trainWindows),
        .textAnchor(),
    ]

    public func problem() -> SettingError? {
        width % heads == 0 ? nil : SettingError(key: "width", problem: "width \(width) is not a multiple of heads \(heads)")
    }
}

public final class SASRec: @unchecked Sendable {
    public static let kind = "sasrec"

    public let config: SASRecConfig
    /// Model row i is the external item id items[i].
    public let items: [String]
    public let store: ParameterStore
    public var version: String = ""
    public var training = SnapshotManifest.TrainingSummary(users: 0, items: 0, interactions: 0, source: "")
    public var metrics: [String: Double] = [:]
    /// LLM2SASRec: the text-to-model projection its item table was initialised with (kept so
    /// items that arrive later can be projected the same way); nil for plain SASRec.
    public var textProjection: TextProjection?

    public static func parameterSpecs(_ c: SASRecConfig, items: Int) -> [(name: String, shape: [Int])] {
        let d = c.width, f = c.ffn
        var specs: [(name: String, shape: [Int])] = [("item_embedding", [items, d]), ("position_embedding", [c.maxLength, d])]
        for b in 0..<c.blocks {
            specs += TransformerBlock.block(b, width: d, ffn: f)
        }
        specs += [("final_ln.gamma", [d]), ("final_ln.beta", [d])]
        return specs
    }

    /// A freshly initialised model: Xavier-normal weights and embeddings, unit LN gains, zero biases.
    public init(config: SASRecConfig, items: [String]) {
        self.config = config
        self.items = items
        store = ParameterStore(Self.parameterSpecs(config, items: items.count))
        TransformerBlock.initialize(store, seed: config.seed, std: config.initStd)
        blocks = (0..<config.blocks).map { TransformerBlock(store, index: $0, heads: config.heads, dropout: config.dropout, causal: true, activation: .relu) }
    }

    /// The blocks (causal, ReLU), their weights looked up once.
    private(set) var blocks: [TransformerBlock] = []

    private func p(_ name: String) -> Tensor { store[name] }

    // MARK: - forward

    /// Final hidden states [T, d] of a packed batch. `ids` are model rows, `layout` the windows.
    /// `keysAndValues`, if given, receives each block's qkv projection [T, 3d] (for caches).
    /// `lastOnly`: only each window's last position [B, d] (serving and evaluation): the final
    /// block then computes keys and values for every position but the query, output projection
    /// and FFN for the last one alone; a causal last query sees every position, so this equals
    /// the full pass's last rows (tested).
    public func hidden(_ tape: Tape, ids: [Int32], layout: SequenceLayout, lastOnly: Bool = false,
                       keysAndValues: ((Int, Tensor) -> Void)? = nil) -> Tensor {
        let c = config
        var positions = [Int32](repeating: 0, count: layout.total)
        for s in 0..<layout.count {
            for i in 0..<layout.lengths[s] { positions[layout.offsets[s] + i] = Int32(i) }
        }
        var x = embed(tape, ids: ids, positions: positions)
        for block in blocks {
            x = block(tape, x, lastOnly && block.index == c.blocks - 1 ? .lastOnly(layout) : .full(layout), keysAndValues: keysAndValues)
        }
        return finalNorm(tape, x)
    }

    /// x [n, d] = E[ids] * sqrt(d) + P[positions], then dropout.
    func embed(_ tape: Tape, ids: [Int32], positions: [Int32]) -> Tensor {
        let embedded = tape.scale(tape.gather(p("item_embedding"), ids), Float(config.width).squareRoot())
        return tape.dropout(tape.add(embedded, tape.gather(p("position_embedding"), positions)), config.dropout)
    }

    func finalNorm(_ tape: Tape, _ x: Tensor) -> Tensor { tape.layerNorm(x, p("final_ln.gamma"), p("final_ln.beta")) }

    /// The window the model reads for a history: its last L items (rows), positions from 0.
    public func window(_ history: [Int32]) -> ArraySlice<Int32> { history.suffix(config.maxLength) }

    /// Last-position hidden states [B, d] of the histories' windows (empty histories give the
    /// hidden state of... nothing: their rows are zero and score every item 0).
    public func lastHidden(_ histories: [[Int32]]) -> (hidden: [Float], present: [Bool]) {
        let d = config.width
        var ids: [Int32] = []
        var lengths: [Int] = []
        for history in histories {
            let w = window(history)
            ids.append(contentsOf: w)
            lengths.append(w.count)
        }
        var out = [Float](repeating: 0, count: histories.count * d)
        let present = lengths.map { $0 > 0 }
        guard !ids.isEmpty else { return (out, present) }
        let layout = SequenceLayout(lengths: lengths.filter { $0 > 0 })
        let tape = Tape(recording: false, training: false)
        let h = hidden(tape, ids: ids, layout: layout, lastOnly: true)
        var packed = 0
        for (i, length) in lengths.enumerated() where length > 0 {
            for j in 0..<d { out[i * d + j] = h.data[packed * d + j] }
            packed += 1
        }
        withExtendedLifetime(h) {}
        return (out, present)
    }

    /// scores[B, V] = hidden[B, d] E^T, rows split over the cores.
    public func scores(hidden: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        let d = config.width, v = items.count
        let table = store["item_embedding"].data
        if count == 1 {
            BLAS.gemv(m: v, n: d, a: table, lda: d, x: hidden, y: out)
        } else {
            Parallel.gemm(transB: true, m: count, n: v, k: d, a: hidden, lda: d, b: table, ldb: d, c: out, ldc: v)
        }
    }

    // MARK: - snapshots

    public func snapshotWriter() throws -> SnapshotWriter {
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: config.hyperParameters,
                                    training: training, metrics: metrics.filter { $0.value.isFinite })
        try writer.add(store)
        // Same kind ("sasrec"): serving and evaluation need nothing new; the extra tensors only
        // matter to the cold-start path.
        try textProjection?.add(to: &writer, initName: "llm2sasrec")
        return writer
    }

    public func save(to path: String) throws {
        let writer = try snapshotWriter()
        try writer.write(to: path)
        version = writer.contentVersion
    }

    public static func load(path: String) throws -> SASRec { try load(try Snapshot.read(path: path)) }

    /// Verifies kind, hyper-parameters, every tensor's name and shape, and that every weight is
    /// finite (a NaN would rank garbage silently), then builds the model.
    public static func load(_ snapshot: Snapshot) throws -> SASRec {
        let manifest = snapshot.manifest
        guard manifest.kind == kind else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): holds a '\(manifest.kind)' model, not a '\(kind)' model; pass a SASRec snapshot or the matching --model")
        }
        let config = try SASRecConfig(hyperParameters: manifest.hyperParameters, path: snapshot.path)
        try snapshot.checkItems()
        let model = SASRec(config: config, items: manifest.items)
        try snapshot.load(into: model.store)
        model.textProjection = try TextProjection.load(from: snapshot, width: config.width)
        model.version = manifest.modelVersion
        model.training = manifest.training
        model.metrics = manifest.metrics
        return model
    }
}

extension SASRec: CatalogScorer {
    public func scoreAll(histories: [[Int32]], into out: UnsafeMutablePointer<Float>) {
        let (hidden, present) = lastHidden(histories)
        hidden.withUnsafeBufferPointer { scores(hidden: $0.baseAddress!, count: histories.count, into: out) }
        let v = items.count
        for (i, ok) in present.enumerated() where !ok { (out + i * v).update(repeating: 0, count: v) }
    }
}

// MARK: - warm start

extension SASRec {
    /// How `warmStart(from:)` went, for the retrain log and report.
    public enum WarmStart: Sendable, Equatable, CustomStringConvertible {
        /// Every tensor copied; `copiedItems` embedding rows came from the base model, `newItems` kept their fresh init.
        case warm(copiedItems: Int, newItems: Int)
        /// Nothing copied: the architectures differ (the reason names the first difference).
        case scratch(reason: String)

        public var description: String {
            switch self {
            case .warm(let copied, let new): return "warm start: \(copied) item rows and all other weights copied from the current model, \(new) new items freshly initialised"
            case .scratch(let reason): return "trained from scratch: \(reason)"
            }
        }
    }

    /// Copies a previous model's weights into this freshly initialised one when the architectures
    /// match: every non-embedding tensor, the position table, and the embedding row of each item
    /// both models know (matched by external id, so the base vocabulary may be a prefix or any
    /// subset). Items only this model has keep their fresh rows. Differences leave it untouched.
    @discardableResult
    public func warmStart(from base: SASRec) -> WarmStart {
        let a = base.config, b = config
        let checks: [(String, Int, Int)] = [("width", a.width, b.width), ("blocks", a.blocks, b.blocks), ("heads", a.heads, b.heads),
                                            ("ffn_width", a.ffn, b.ffn), ("max_length", a.maxLength, b.maxLength)]
        if let (name, was, now) = checks.first(where: { $0.1 != $0.2 }) {
            return .scratch(reason: "\(name) was \(was), is now \(now)")
        }
        var baseRow: [String: Int] = [:]
        for (row, item) in base.items.enumerated() { baseRow[item] = row }
        let overlap = items.filter { baseRow[$0] != nil }.count
        guard overlap > 0 else { return .scratch(reason: "no item in common with the current model") }
        for entry in store.entries where entry.name != "item_embedding" {
            store.load(entry.name, base.store.floats(entry.name))
        }
        let d = config.width
        let from = base.store.floats("item_embedding")
        var to = store.floats("item_embedding")
        for (row, item) in items.enumerated() {
            guard let old = baseRow[item] else { continue }
            for j in 0..<d { to[row * d + j] = from[old * d + j] }
        }
        store.load("item_embedding", to)
        return .warm(copiedItems: overlap, newItems: items.count - overlap)
    }
}
