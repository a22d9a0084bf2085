import ArgumentParser
import Foundation
import StreamRecModels

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model from interaction sequences and write a snapshot.",
        discussion: "sasrec writes a checkpoint every epoch (OUT.ckpt) and resumes from it with --resume; a report (OUT.report.md, OUT.report.svg) lands beside the snapshot.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Model kind: transition, sasrec, llmseqsim (no training: a snapshot of the item vectors), llm2sasrec (SASRec initialised from text embeddings).") var model: String = "transition"
    @Option(help: "Embedding cache (llmseqsim, llm2sasrec; `streamrec embed`).") var embeddings: String?
    @Option(help: "LLMSeqSim session embedding: mean or decay.") var aggregation: String = "mean"
    @Option(help: "LLMSeqSim decay: items after which a weight halves.") var halfLife: Double = 3
    @Option(help: "Training data: a directory with sequences.txt, a sequences .txt, MovieLens ratings.dat, or user,item,timestamp .csv.") var data: String
    @Option(help: "Snapshot file to write.") var out: String
    @Option(help: "loo: hold out each user's last two items (validation and test targets) so `streamrec evaluate` is honest; none: train on everything (for serving).")
    var holdout: Holdout = .loo

    @Option(help: "Successors kept per item (transition).") var successors: Int = 50

    @Option(help: "Epochs (sasrec).") var epochs: Int = 200
    @Option(help: "Loss (sasrec): ce (full softmax), bce (one negative, the paper's), sampled.") var loss: String = "ce"
    @Option(help: "Shared negatives per batch for --loss sampled.") var negatives: Int = 256
    @Option(help: "Max sequence length L (sasrec): 200 for ML-1M, 50 for Beauty.") var maxLength: Int = 200
    @Option(help: "Width d.") var width: Int = 64
    @Option(help: "Transformer blocks.") var blocks: Int = 2
    @Option(help: "Attention heads.") var heads: Int = 1
    @Option(help: "Dropout rate.") var dropout: Float = 0.2
    @Option(help: "Adam learning rate.") var lr: Float = 1e-3
    @Option(help: "Sequences per batch.") var batchSize: Int = 128
    @Option(help: "Validate every N epochs.") var evalEvery: Int = 5
    @Option(help: "Stop after this many validations without improvement.") var patience: Int = 4
    @Option(help: "Random seed.") var seed: UInt64 = 42
    @Option(help: "Checkpoint path (default OUT.ckpt).") var checkpoint: String?
    @Flag(help: "Continue from the checkpoint if it exists.") var resume = false

    enum Holdout: String, ExpressibleByArgument, CaseIterable {
        case loo, none
    }

    func run() throws {
        do {
            switch model {
            case "transition": try trainTransition()
            case "sasrec", "llm2sasrec": try trainSASRec()
            case LLMSeqSim.kind: try buildLLMSeqSim()
            default: throw ValidationError("unknown model '\(model)'; available: transition, sasrec, llmseqsim, llm2sasrec")
            }
        } catch let error as ModelError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    private func trainTransition() throws {
        let start = Date()
        let dataset = try SequenceDataset.load(path: data)
        // Users with fewer than 3 items have no targets and are kept whole by leaveOneOut.
        let sequences = holdout == .loo ? dataset.leaveOneOut().train : dataset.sequences.map(\.items)
        var config = TransitionConfig()
        config.successorsPerItem = successors
        // The source records the holdout, so `evaluate` can tell an honest snapshot from a leaky one.
        let trained = TransitionModel.train(sequences: sequences, config: config, source: "\(data) (holdout \(holdout.rawValue))")
        try trained.save(to: out)
        let interactions = sequences.reduce(0) { $0 + $1.count }
        print(String(format: "trained %@ on %d sequences (%d interactions, holdout %@) in %.2f s -> %@",
                     model, sequences.count, interactions, holdout.rawValue, Date().timeIntervalSince(start), out))
    }

    private func loadCache() throws -> EmbeddingCache {
        guard let embeddings else { throw ValidationError("--model \(model) needs --embeddings CACHE (make one with `streamrec embed --items DIR/items.tsv --out CACHE`)") }
        return try EmbeddingCache.load(path: embeddings)
    }

    /// No training: the snapshot holds the vectors of the dataset's items (all of them: text is
    /// not interaction data, so the holdout does not apply; recorded as loo for `evaluate`).
    private func buildLLMSeqSim() throws {
        guard let kind = LLMSeqSimConfig.Aggregation(rawValue: aggregation), halfLife > 0 else {
            throw ValidationError("--aggregation must be mean or decay and --half-life positive")
        }
        let start = Date()
        let cache = try loadCache()
        let dataset = try SequenceDataset.load(path: data)
        let split = EncodedSplit(dataset)
        let sim = LLMSeqSim.build(cache: cache, items: split.items, config: .init(aggregation: kind, halfLife: halfLife))
        sim.training = .init(users: dataset.sequences.count, items: sim.items.count, interactions: 0, source: "\(data) (holdout \(holdout.rawValue))")
        try sim.save(to: out)
        let missing = split.items.count - sim.items.count
        print(String(format: "built llmseqsim over %d items (%d without a vector left out), %@ aggregation, in %.2f s -> %@",
                     sim.items.count, missing, aggregation, Date().timeIntervalSince(start), out))
    }

    private func trainSASRec() throws {
        guard let lossKind = SASRecConfig.Loss(rawValue: loss) else {
            throw ValidationError("unknown --loss '\(loss)'; use ce, bce or sampled")
        }
        guard width % heads == 0 else { throw ValidationError("--width \(width) must be a multiple of --heads \(heads)") }
        let start = Date()
        let dataset = try SequenceDataset.load(path: data)
        var split = EncodedSplit(dataset)
        if holdout == .none {
            // Serving: every interaction trains; validation keeps its (now optimistic) role of picking the epoch.
            split.train = dataset.sequences.map { $0.items.map { split.rowOf[$0]! } }
        }
        var config = SASRecConfig()
        config.epochs = epochs; config.loss = lossKind; config.negatives = negatives; config.maxLength = maxLength
        config.width = width; config.blocks = blocks; config.heads = heads; config.dropout = dropout
        config.learningRate = lr; config.batchSize = batchSize; config.evalEvery = evalEvery; config.patience = patience
        config.seed = seed
        let sasrec = SASRec(config: config, items: split.items)
        if model == "llm2sasrec" {
            let cache = try loadCache()
            let pcaStart = Date()
            let initialised = try sasrec.initializeItemEmbeddings(from: cache)
            print(String(format: "llm2sasrec: %d of %d item embeddings initialised from text (PCA %d -> %d in %.2f s, scale %.4g)", initialised,
                         split.items.count, cache.dimension, width, Date().timeIntervalSince(pcaStart), sasrec.textProjection!.scale))
        }
        sasrec.training = .init(users: dataset.sequences.count, items: split.items.count,
                                interactions: split.train.reduce(0) { $0 + $1.count }, source: "\(data) (holdout \(holdout.rawValue))")
        let trainer = SASRecTrainer(model: sasrec)
        let checkpointPath = checkpoint ?? out + ".ckpt"
        if resume, FileManager.default.fileExists(atPath: checkpointPath) {
            try trainer.resume(from: checkpointPath)
            print("resumed from \(checkpointPath) after epoch \(trainer.completedEpochs)")
        }
        print("training sasrec on \(split.train.count) sequences, \(split.items.count) items, \(split.validation.count) validation cases")
        let isTerminal = isatty(STDERR_FILENO) != 0
        try trainer.fit(split, checkpoint: checkpointPath, progressInterval: isTerminal ? 0.5 : 30, progress: { p in
            let line = String(format: "epoch %d/%d step %d/%d loss %.4f %.0f seq/s ETA %@", p.epoch, p.epochs, p.step, p.steps, p.loss,
                              p.sequencesPerSecond, formatDuration(p.eta))
            FileHandle.standardError.write(Data((isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
        }, log: { message in
            FileHandle.standardError.write(Data(((isTerminal ? "\r\u{1B}[K" : "") + message + "\n").utf8))
        })
        let wall = Date().timeIntervalSince(start)
        sasrec.metrics["train_seconds"] = wall
        try sasrec.save(to: out)
        let settings = config.hyperParameters.merging(["data": data, "holdout": holdout.rawValue, "init": model == "llm2sasrec" ? "llm2sasrec (\(embeddings ?? ""))" : "random"]) { a, _ in a }
        try TrainingReport.markdown(model: model, snapshot: out, settings: settings, history: trainer.history,
                                    metrics: sasrec.metrics, wallSeconds: wall).write(toFile: out + ".report.md", atomically: true, encoding: .utf8)
        try TrainingReport.svg(title: "\(model == "llm2sasrec" ? "LLM2SASRec" : "SASRec") on \(data)", history: trainer.history).write(toFile: out + ".report.svg", atomically: true, encoding: .utf8)
        print(String(format: "trained \(model): best validation NDCG@10 %.4f after %d epochs in %@ -> %@ (report: %@.report.md)",
                     trainer.bestNDCG, trainer.completedEpochs, formatDuration(wall), out, out))
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
}
