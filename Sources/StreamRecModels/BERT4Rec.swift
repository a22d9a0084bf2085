// BERT4Rec: sequential recommendation with a bidirectional transformer trained by the Cloze
// task (Sun et al., CIKM 2019); LLM2BERT4Rec starts its item table from text embeddings (Boz et
// al., arXiv 2402.01339, section 4), as LLM2SASRec does.
//
// Shape legend
//   V  items (model rows)          M = V: the [mask] token's row of the input table
//   d  width (64)                  H  heads (2)           f  FFN width (4 d)
//   L  max positions (200/50)      B  sequences           T  positions in a packed batch
//
// Paper -> code
//   eq. 6  h0_i = v_i + p_i, learned positions        embed(): E[ids] + P[pos], then dropout
//   eq. 1-2 multi-head self-attention, every position  TransformerBlock(causal: false)
//          attends to every other (bidirectional)
//   eq. 3  position-wise FFN with GELU                 TransformerBlock(activation: .gelu)
//   eq. 4-5 residual, dropout, layer norm, stacked     pre-LN blocks and a final LN (the paper
//                                                     is post-LN; pre-LN is what our SASRec runs)
//   eq. 7  P(v) = softmax(GELU(h W_P + b_P) E^T + b_O) h E[0..<V]^T: the tied table, without the
//                                                     projection head and output bias (as our SASRec)
//   eq. 8  Cloze loss: -log P(v_m = v*_m | masked S)   each window position is replaced by [mask]
//                                                     with probability rho (mask_prob; at least one
//                                                     per window), cross-entropy over the full
//                                                     table at the masked positions only
//   sec. 3.6 test: append [mask] to the sequence       scoreAll: the last L-1 items, then [mask];
//                                                     the final block runs at the [mask] alone
//   2402.01339 sec. 4: item table from PCA(text)       TrainingJob.textStart (LLM2BERT4Rec); ours, not
//                                                     the paper's: text_anchor adds
//                                                     lambda (E_r - alpha A_r) to the table's gradient
//                                                     (TextAnchor, L2-SP toward the text start)
// Serving: no per-user cache (a bidirectional model's earlier positions change with every new
// item); each event re-runs the window for its user, batched across the micro-batch, with the
// final block computed only at the [mask] position (TransformerBlock's last-position mode).
//
// Snapshot tensors (kind "bert4rec"): item_embedding [V+1, d] (row V is [mask]),
// position_embedding [L, d], block<b>.* (TransformerBlock), final_ln.*; LLM2BERT4Rec adds
// text_projection.* (for items that arrive later).
import Foundation
import StreamRecNumerics

public struct BERT4RecConfig: Sendable, Equatable, Codable {
    /// d
    public var width = 64
    public var blocks = 2
    public var heads = 2
    /// f; 0 means 4 d (the paper's).
    public var ffnWidth = 0
    /// L, the [mask] appended at inference included: 200 for ML-1M, 50 for Beauty.
    public var maxLength = 200
    public var dropout: Float = 0.1
    /// rho: the probability of masking each position of a training window.
    public var maskProb: Float = 0.2
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 0
    public var batchSize = 128
    public var epochs = 200
    public var evalEvery = 5
    public var patience = 4
    public var clipNorm: Float = 0
    public var seed: UInt64 = 42
    /// N(0, initStd^2) for every matrix and embedding (BERT's 0.02); 0 = Xavier-normal.
    public var initStd: Float = 0.02
    /// Training windows per sequence, as SASRec's train_windows: 1 = the last L items.
    public var trainWindows = 1
    /// LLM2BERT4Rec: pull of the text-started item rows back to their start (TextAnchor); 0 = off.
    public var textAnchor: Float = 0

    public init() {}

    var ffn: Int { ffnWidth > 0 ? ffnWidth : 4 * width }
}

extension BERT4RecConfig: TrainingLoopSettings, TextStartSettings {
    /// The key table: snapshots, `train` flags and the `train.bert4rec.*` config keys.
    public static let keys: [SettingKey<BERT4RecConfig>] = SettingKey.trainingLoop() + [
        .int("width", "width d (a multiple of heads)", 2...4096, \.width),
        .int("blocks", "transformer blocks", 1...64, \.blocks),
        .int("heads", "attention heads", 1...64, \.heads),
        .ffnWidth("FFN width f (0 = 4 d, the paper's)", \.ffnWidth) { $0.ffn },
        .int("max_length", "max sequence length L, the appended [mask] included (200: ML-1M, 50: Beauty)", 2...100_000, \.maxLength),
        .float("dropout", "dropout rate", 0...0.95, \.dropout),
        .float("mask_prob", "Cloze: probability of masking each position of a training window", 0.01...0.99, \.maskProb),
        .float("init_std", "initialisation: N(0, std^2) for every matrix and embedding (0.02, BERT's); 0 = Xavier-normal", 0...10, \.initStd),
        .int("train_windows", "training windows per sequence: 1 = the last L items; n = also up to n-1 earlier windows; 0 = all", 0...1_000_000, \.trainWindows),
        .textAnchor(),
    ]

    public func problem() -> SettingError? {
        width % heads == 0 ? nil : SettingError(key: "width", problem: "width \(width) is not a multiple of heads \(heads)")
    }
}

public final class BERT4Rec: CatalogScorer, @unchecked Sendable {
    public static let kind = "bert4rec"

    public let config: BERT4RecConfig
    /// Model row i is the external item id items[i]; row items.count of the input table is [mask].
    public let items: [String]
    public let store: ParameterStore
    public var version = ""
    public var training = SnapshotManifest.TrainingSummary(users: 0, items: 0, interactions: 0, source: "")
    public var metrics: [String: Double] = [:]
    /// LLM2BERT4Rec: the projection its item table was started from; nil for BERT4Rec.
    public var textProjection: TextProjection?
    private(set) var blocks: [TransformerBlock] = []

    public var maskRow: Int32 { Int32(items.count) }

    public static func parameterSpecs(_ c: BERT4RecConfig, items: Int) -> [(name: String, shape: [Int])] {
        var specs: [(name: String, shape: [Int])] = [("item_embedding", [items + 1, c.width]), ("position_embedding", [c.maxLength, c.width])]
        for b in 0..<c.blocks { specs += TransformerBlock.block(b, width: c.width, ffn: c.ffn) }
        return specs + [("final_ln.gamma", [c.width]), ("final_ln.beta", [c.width])]
    }

    public init(config: BERT4RecConfig, items: [String]) {
        self.config = config
        self.items = items
        store = ParameterStore(Self.parameterSpecs(config, items: items.count))
        TransformerBlock.initialize(store, seed: config.seed, std: config.initStd)
        blocks = (0..<config.blocks).map { TransformerBlock(store, index: $0, heads: config.heads, dropout: config.dropout, causal: false, activation: .gelu) }
    }

    // MARK: - forward

    /// Hidden states of a packed batch of windows ([T, d]; [B, d] with `lastOnly`: each
    /// window's last position, the [mask] at inference). `ids` may hold the mask row.
    func hidden(_ tape: Tape, ids: [Int32], layout: SequenceLayout, lastOnly: Bool = false) -> Tensor {
        var positions = [Int32](repeating: 0, count: layout.total)
        for s in 0..<layout.count {
            for i in 0..<layout.lengths[s] { positions[layout.offsets[s] + i] = Int32(i) }
        }
        var x = tape.dropout(tape.add(tape.gather(store["item_embedding"], ids), tape.gather(store["position_embedding"], positions)), config.dropout)
        for block in blocks {
            x = block(tape, x, lastOnly && block.index == config.blocks - 1 ? .lastOnly(layout) : .full(layout))
        }
        return tape.layerNorm(x, store["final_ln.gamma"], store["final_ln.beta"])
    }

    /// The inference window of a history: its last L-1 rows, then [mask].
    public func window(_ history: [Int32]) -> [Int32] { Array(history.suffix(config.maxLength - 1)) + [maskRow] }

    /// Hidden states at the appended [mask] [B * d]; empty histories get zero rows.
    func maskHidden(_ histories: [[Int32]]) -> [Float] {
        let d = config.width
        var out = [Float](repeating: 0, count: histories.count * d)
        let present = histories.indices.filter { !histories[$0].isEmpty }
        guard !present.isEmpty else { return out }
        let windows = present.map { window(histories[$0]) }
        let tape = Tape(recording: false, training: false)
        let h = hidden(tape, ids: windows.flatMap { $0 }, layout: SequenceLayout(lengths: windows.map(\.count)), lastOnly: true)
        for (j, i) in present.enumerated() { for k in 0..<d { out[i * d + k] = h.data[j * d + k] } }
        withExtendedLifetime(h) {}
        return out
    }

    /// Scores over the V item rows (never the [mask] row).
    public func scoreAll(histories: [[Int32]], into out: UnsafeMutablePointer<Float>) {
        let hidden = maskHidden(histories), d = config.width, v = items.count
        hidden.withUnsafeBufferPointer { h in
            Parallel.gemm(transB: true, m: histories.count, n: v, k: d, a: h.baseAddress!, lda: d, b: store["item_embedding"].data, ldb: d,
                          c: out, ldc: v)
        }
        for (i, history) in histories.enumerated() where history.isEmpty { (out + i * v).update(repeating: 0, count: v) }
    }

    // MARK: - snapshots

    public func snapshotWriter() throws -> SnapshotWriter {
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: config.hyperParameters,
                                    training: training, metrics: metrics.filter { $0.value.isFinite })
        try writer.add(store)
        try textProjection?.add(to: &writer, initName: "llm2bert4rec")
        return writer
    }

    /// Verifies kind, settings, every tensor's name and shape, and that every weight is finite.
    public static func load(_ snapshot: Snapshot) throws -> BERT4Rec {
        let manifest = snapshot.manifest
        guard manifest.kind == kind else {
            throw ModelError(.badSnapshot, "snapshot \(snapshot.path): holds a '\(manifest.kind)' model, not a '\(kind)' model; pass a BERT4Rec snapshot")
        }
        let config = try BERT4RecConfig(hyperParameters: manifest.hyperParameters, path: snapshot.path)
        try snapshot.checkItems()
        let model = BERT4Rec(config: config, items: manifest.items)
        try snapshot.load(into: model.store)
        model.textProjection = try TextProjection.load(from: snapshot, width: config.width)
        model.version = manifest.modelVersion
        model.training = manifest.training
        model.metrics = manifest.metrics
        return model
    }
}

// MARK: - training (Cloze)

public final class BERT4RecTrainer: EpochTrainer {
    public let model: BERT4Rec
    public var history: [EpochRecord] { loop.history }
    public var bestNDCG: Double { loop.stopping.bestNDCG }
    public var completedEpochs: Int { loop.epochsDone }
    /// LLM2BERT4Rec with text_anchor > 0: holds the text-started rows near their start.
    public var anchor: TextAnchor?
    private let loop: EpochLoop

    public init(model: BERT4Rec) {
        self.model = model
        let c = model.config
        loop = EpochLoop(optimizer: Adam(store: model.store, config: AdamConfig(learningRate: c.learningRate, weightDecay: c.weightDecay)),
                         seed: c.seed &+ 1)
    }

    /// The Cloze inputs of windows: each position masked with probability mask_prob (at least one
    /// per window); returns the input ids, the masked rows of the packed batch and their targets.
    func mask(_ windows: [[Int32]]) -> (ids: [Int32], rows: [Int32], targets: [Int32]) {
        var ids: [Int32] = [], rows: [Int32] = [], targets: [Int32] = []
        for window in windows {
            let offset = ids.count
            var masked = window.indices.filter { _ in loop.rng.uniform() < model.config.maskProb }
            if masked.isEmpty { masked = [loop.rng.below(window.count)] }
            var input = window
            for i in masked {
                input[i] = model.maskRow
                rows.append(Int32(offset + i))
                targets.append(window[i])
            }
            ids += input
        }
        return (ids, rows, targets)
    }

    /// One batch: mask, forward, cross-entropy over the table at the masked positions, update.
    @discardableResult
    public func step(_ windows: [[Int32]]) -> Double {
        let windows = windows.filter { !$0.isEmpty }
        guard !windows.isEmpty else { return 0 }
        let (ids, rows, targets) = mask(windows)
        let tape = Tape(recording: true, training: true, seed: loop.rng.next())
        let h = model.hidden(tape, ids: ids, layout: SequenceLayout(lengths: windows.map(\.count)))
        let loss = tape.softmaxCrossEntropy(tape.gather(h, rows), table: model.store["item_embedding"], targets: targets)
        tape.backward(loss)
        anchor?.addGradient(to: model.store["item_embedding"])
        if model.config.clipNorm > 0 { model.store.clipGradNorm(model.config.clipNorm) }
        loop.optimizer.update(lr: model.config.learningRate)
        return Double(loss.item)
    }

    public func fit(_ split: EncodedSplit, checkpoint: String? = nil, progressInterval: Double = 0.5,
                    progress: ((TrainingProgress) -> Void)? = nil, log: ((String) -> Void)? = nil) throws {
        let c = model.config
        // Windows of L items (SASRec's rule with its one extra target position).
        let windows = SASRecTrainer.trainingWindows(split.train, length: c.maxLength - 1, limit: c.trainWindows)
        try loop.run(samples: windows.count, .init(epochs: c.epochs, batchSize: c.batchSize, evalEvery: c.evalEvery, patience: c.patience),
                     progressInterval: progressInterval, progress: progress, log: log,
                     checkpoint: checkpoint.map { path in { try self.saveCheckpoint(path) } },
                     step: { batch in self.step(batch.map { windows[$0] }) },
                     validate: { rankingMetrics(self.model, split.validation) })
        model.metrics.merge(loop.metrics) { _, new in new }
    }

    static let checkpointKind = "bert4rec-checkpoint"

    public func saveCheckpoint(_ path: String) throws {
        try loop.writeCheckpoint(to: path, kind: Self.checkpointKind, hyperParameters: model.config.hyperParameters,
                                 items: model.items, training: model.training)
    }

    /// How long and how fast to go on may change between runs; the rest may not.
    public func resume(from path: String) throws {
        try loop.restoreCheckpoint(from: path, kind: Self.checkpointKind, modelName: "BERT4Rec", hyperParameters: model.config.hyperParameters,
                                   adjustable: ["epochs", "learning_rate", "eval_every", "patience"],
                                   defaults: BERT4RecConfig().hyperParameters, items: model.items)
    }
}

// MARK: - serving and the catalogue

/// BERT4Rec's part of serving: each session's window re-run with [mask] appended, batched, the
/// final block at the [mask] only; rows of items added from text after the table (LLM2BERT4Rec).
public final class BERT4RecSessionScorer: SessionScorer, @unchecked Sendable {
    public let model: BERT4Rec
    private var table: TiedTableScores

    public init(model: BERT4Rec) {
        self.model = model
        table = TiedTableScores(projection: model.textProjection, width: model.config.width)
    }

    public var rowCount: Int { model.items.count + table.appendedCount }
    public var textDimension: Int? { model.textProjection?.textDimension }

    public func appendRows(items: [String], vectors: [Float]) -> Int {
        let first = rowCount
        table.append(vectors: vectors)
        return first
    }

    public func score(users: [String], sessions: [[Int32]]) -> SessionScores {
        let v = model.items.count
        // Appended rows have no learned input row: sessions skip them.
        let hidden = model.maskHidden(sessions.map { $0.filter { Int($0) < v } })
        return table.scores(hidden: hidden, count: sessions.count, table: model.store["item_embedding"].data, items: v)
    }
}

extension BERT4Rec: CatalogueModel {
    public var kind: String { Self.kind }
    public func sessionScorer(_ options: ServingOptions) -> any SessionScorer { BERT4RecSessionScorer(model: self) }
}

/// BERT4Rec in the catalogue; `llm2bert4rec` starts the item table from text embeddings and
/// saves a `bert4rec` snapshot that keeps the projection.
public enum BERT4RecFamily: ModelFamily {
    public typealias Settings = BERT4RecConfig
    public static let name = BERT4Rec.kind
    public static let kinds = [BERT4Rec.kind]
    public static let trainKinds = [BERT4Rec.kind, "llm2bert4rec"]
    public static let summary = "BERT4Rec (bidirectional, Cloze-trained); llm2bert4rec starts its item table from text embeddings"

    public static func load(_ snapshot: Snapshot) throws -> any CatalogueModel { try BERT4Rec.load(snapshot) }

    public static func train(_ job: TrainingJob, settings: BERT4RecConfig) throws -> TrainingResult {
        let split = job.split()
        let model = BERT4Rec(config: settings, items: split.items)
        let start = try job.textStart("llm2bert4rec", table: model.store["item_embedding"], items: split.items, width: settings.width,
                                      widthKey: "train.bert4rec.width")
        model.textProjection = start?.projection
        model.training = .init(users: job.dataset.sequences.count, items: split.items.count,
                               interactions: split.train.reduce(0) { $0 + $1.count }, source: job.source)
        let trainer = BERT4RecTrainer(model: model)
        trainer.anchor = try settings.anchor(table: model.store["item_embedding"], rows: start?.rows, width: settings.width,
                                             family: name, llmKind: "llm2bert4rec")
        let (history, summary) = try job.run(trainer, on: split)
        return TrainingResult(model: model, history: history, summary: summary,
                              reportSettings: settings.hyperParameters.merging(["init": start?.note ?? "random"]) { a, _ in a },
                              warmStart: job.current.map { _ in "trained from scratch: BERT4Rec has no warm start" })
    }
}
