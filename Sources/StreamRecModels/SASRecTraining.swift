// Training SASRec: packed length-free batches, the three losses, validation with early stopping,
// resumable checkpoints, and the per-epoch history the training report draws.
import Foundation
import StreamRecNumerics

public struct TrainingProgress: Sendable {
    public var epoch: Int
    public var epochs: Int
    public var step: Int
    public var steps: Int
    public var loss: Double
    public var sequencesPerSecond: Double
    /// Seconds left at the current pace, for the whole run (all epochs).
    public var eta: Double
}

public struct EpochRecord: Sendable, Codable, Equatable {
    public var epoch: Int
    public var loss: Double
    public var seconds: Double
    public var sequencesPerSecond: Double
    public var validationNDCG10: Double?
    public var validationHR10: Double?
}

/// Rows of the model's vocabulary and the leave-one-out split of a dataset, in model rows.
public struct EncodedSplit: Sendable {
    public var items: [String]
    public var rowOf: [String: Int32]
    public var train: [[Int32]]
    public var validation: [(history: [Int32], target: Int32)]
    public var test: [(history: [Int32], target: Int32)]

    /// Every item of the dataset gets a row (in order of first appearance), so the model ranks
    /// the whole catalogue, including items seen only in held-out positions.
    public init(_ dataset: SequenceDataset) { self.init(dataset, leadingItems: []) }

    /// `leadingItems` take the first rows, in their order (a warm start keeps an older model's
    /// rows where they were); the dataset's other items follow in order of first appearance.
    public init(_ dataset: SequenceDataset, leadingItems: [String]) {
        var rowOf: [String: Int32] = [:]
        var items: [String] = []
        for item in leadingItems where rowOf[item] == nil {
            rowOf[item] = Int32(items.count)
            items.append(item)
        }
        for (_, sequence) in dataset.sequences {
            for item in sequence where rowOf[item] == nil {
                rowOf[item] = Int32(items.count)
                items.append(item)
            }
        }
        self.items = items
        self.rowOf = rowOf
        let split = dataset.leaveOneOut()
        let encode = { (s: [String]) in s.map { rowOf[$0]! } }
        train = split.train.map(encode)
        validation = split.validationCases.map { (encode($0.history), rowOf[$0.target]!) }
        test = split.testCases.map { (encode($0.history), rowOf[$0.target]!) }
    }
}

public final class SASRecTrainer: EpochTrainer {
    public let model: SASRec
    public let config: SASRecConfig
    public var optimizer: Adam { loop.optimizer }
    public var history: [EpochRecord] { loop.history }
    public var bestNDCG: Double { loop.stopping.bestNDCG }
    public var completedEpochs: Int { loop.epochsDone }
    /// LLM2SASRec with text_anchor > 0: holds the text-started rows near their start.
    public var anchor: TextAnchor?
    private let loop: EpochLoop

    public init(model: SASRec) {
        self.model = model
        config = model.config
        let optimizer = Adam(store: model.store, config: AdamConfig(learningRate: model.config.learningRate, weightDecay: model.config.weightDecay))
        loop = EpochLoop(optimizer: optimizer, seed: model.config.seed &+ 1)
    }

    /// One batch: forward, loss, backward, update. Returns the loss.
    @discardableResult
    public func step(_ batch: [[Int32]], lr: Float) -> Double {
        let c = config
        var ids: [Int32] = [], targets: [Int32] = [], lengths: [Int] = []
        for sequence in batch where sequence.count >= 2 {
            let w = sequence.suffix(c.maxLength + 1)
            ids.append(contentsOf: w.dropLast())
            targets.append(contentsOf: w.dropFirst())
            lengths.append(w.count - 1)
        }
        guard !ids.isEmpty else { return 0 }
        let layout = SequenceLayout(lengths: lengths)
        let tape = Tape(recording: true, training: true, seed: loop.rng.next())
        let h = model.hidden(tape, ids: ids, layout: layout)
        let table = model.store["item_embedding"]
        let loss: Tensor
        switch c.loss {
        case .crossEntropy:
            loss = tape.softmaxCrossEntropy(h, table: table, targets: targets)
        case .sampledSoftmax:
            let negatives = (0..<c.negatives).map { _ in Int32(loop.rng.below(model.items.count)) }
            loss = tape.sampledSoftmaxCrossEntropy(h, table: table, targets: targets, negatives: negatives)
        case .binary:
            var negatives = [Int32](repeating: 0, count: targets.count)
            var start = 0
            for (s, length) in lengths.enumerated() {
                _ = s
                let seen = Set(ids[start..<(start + length)]).union(targets[start..<(start + length)])
                for i in start..<(start + length) {
                    var candidate = Int32(loop.rng.below(model.items.count))
                    var tries = 0
                    while seen.contains(candidate) && tries < 20 { candidate = Int32(loop.rng.below(model.items.count)); tries += 1 }
                    negatives[i] = candidate
                }
                start += length
            }
            loss = tape.binaryCrossEntropy(h, table: table, positives: targets, negatives: negatives)
        }
        tape.backward(loss)
        anchor?.addGradient(to: table)
        if c.clipNorm > 0 { model.store.clipGradNorm(c.clipNorm) }
        optimizer.update(lr: lr)
        return Double(loss.item)
    }

    /// The training windows of `sequences`: the last `length + 1` items of each (inputs and their
    /// next-item targets), then, up to `limit` windows per sequence (0 = no limit), the windows
    /// before it, each ending where the next one's first target starts so every target is trained
    /// once. Windows shorter than 2 items are dropped.
    public static func trainingWindows(_ sequences: [[Int32]], length: Int, limit: Int) -> [[Int32]] {
        var windows: [[Int32]] = []
        for sequence in sequences {
            var end = sequence.count, taken = 0
            while end >= 2 && (limit <= 0 || taken < max(1, limit)) {
                windows.append(Array(sequence[max(0, end - length - 1)..<end]))
                taken += 1
                end -= length
            }
        }
        return windows
    }

    /// Trains up to config.epochs (from where a resumed checkpoint left off) over the training
    /// windows, validating every evalEvery epochs, keeping the best weights and stopping after
    /// `patience` validations without improvement. Writes a checkpoint after every epoch when
    /// `checkpoint` is set. `progressInterval`: seconds between progress calls (a terminal wants
    /// ~0.5, a log file less).
    public func fit(_ split: EncodedSplit, checkpoint: String? = nil, progressInterval: Double = 0.5,
                    progress: ((TrainingProgress) -> Void)? = nil, log: ((String) -> Void)? = nil) throws {
        let c = config
        let sequences = Self.trainingWindows(split.train, length: c.maxLength, limit: c.trainWindows)
        try loop.run(samples: sequences.count, .init(epochs: c.epochs, batchSize: c.batchSize, evalEvery: c.evalEvery, patience: c.patience),
                     progressInterval: progressInterval, progress: progress, log: log,
                     checkpoint: checkpoint.map { path in { try self.saveCheckpoint(path) } },
                     step: { batch in self.step(batch.map { sequences[$0] }, lr: c.learningRate) },
                     validate: { self.validate(split.validation) })
        model.metrics.merge(loop.metrics) { _, new in new }
    }

    /// NDCG@10 and HR@10 on validation cases, full ranking with the history excluded.
    public func validate(_ cases: [(history: [Int32], target: Int32)]) -> (ndcg: Double, hr: Double) {
        rankingMetrics(model, cases)
    }

    // MARK: - checkpoints

    static let checkpointKind = "sasrec-checkpoint"

    /// Weights, Adam moments, the RNG, epoch counters and history: everything to continue as if
    /// never stopped.
    public func saveCheckpoint(_ path: String) throws {
        try loop.writeCheckpoint(to: path, kind: Self.checkpointKind, hyperParameters: config.hyperParameters,
                                 items: model.items, training: model.training)
    }

    /// Restores a checkpoint written by the same configuration; refuses one from another. How long
    /// and how fast to go on may change (a resumed run may add epochs or lower the learning rate
    /// once validation plateaus); the architecture and data settings may not.
    public func resume(from path: String) throws {
        try loop.restoreCheckpoint(from: path, kind: Self.checkpointKind, modelName: "SASRec", hyperParameters: config.hyperParameters,
                                   adjustable: ["epochs", "learning_rate", "eval_every", "patience"],
                                   defaults: SASRecConfig().hyperParameters, items: model.items)
    }
}

// MARK: - catalogue

/// SASRec in the catalogue. `llm2sasrec` trains SASRec with its item table started from text
/// embeddings (projected by PCA) and saves a `sasrec` snapshot that keeps the projection.
public enum SASRecFamily: ModelFamily {
    public typealias Settings = SASRecConfig
    public static let name = "sasrec"
    public static let kinds = [SASRec.kind]
    public static let trainKinds = [SASRec.kind, "llm2sasrec"]
    public static let summary = "SASRec (self-attentive, causal); llm2sasrec starts its item table from text embeddings"

    public static func load(_ snapshot: Snapshot) throws -> any CatalogueModel { try SASRec.load(snapshot) }

    public static func train(_ job: TrainingJob, settings: SASRecConfig) throws -> TrainingResult {
        // A warm start keeps the current model's rows first, so its rows are copied in place.
        var base: SASRec? = nil
        var warm: String? = nil
        if let current = job.current {
            if current.manifest.kind != SASRec.kind {
                warm = "trained from scratch: the current version is a \(current.manifest.kind) model"
            } else {
                do { base = try SASRec.load(current) } catch {
                    warm = "trained from scratch: the current SASRec snapshot could not be decoded (\(error))"
                    job.log("warm start refused: \(error)")
                }
            }
        }
        let split = job.split(leadingItems: base?.items ?? [])
        let model = SASRec(config: settings, items: split.items)
        let start = try job.textStart("llm2sasrec", table: model.store["item_embedding"], items: split.items, width: settings.width,
                                      widthKey: "train.sasrec.width")
        model.textProjection = start?.projection
        if let base {
            warm = model.warmStart(from: base).description
        }
        if let warm { job.log("sasrec: \(warm)") }
        model.training = .init(users: job.dataset.sequences.count, items: split.items.count,
                               interactions: split.train.reduce(0) { $0 + $1.count }, source: job.source)
        let trainer = SASRecTrainer(model: model)
        // Anchored at the rows as started (a warm start's copied rows included), before a resume
        // overwrites the table: a resumed run holds the rows to the same start.
        trainer.anchor = try settings.anchor(table: model.store["item_embedding"], rows: start?.rows, width: settings.width,
                                             family: name, llmKind: "llm2sasrec")
        let (history, summary) = try job.run(trainer, on: split)
        return TrainingResult(model: model, history: history, summary: summary,
                              reportSettings: settings.hyperParameters.merging(["init": start?.note ?? "random"]) { a, _ in a }, warmStart: warm)
    }
}
