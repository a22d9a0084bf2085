import ArgumentParser
import Foundation
import StreamRecModels

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model from interaction sequences and write a snapshot.",
        discussion: "sasrec writes a checkpoint every epoch (OUT.ckpt) and resumes from it with --resume; a report (OUT.report.md, OUT.report.svg) lands beside the snapshot.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Model kind: transition, sasrec.") var model: String = "transition"
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
            case "sasrec": try trainSASRec()
            default: throw ValidationError("unknown model '\(model)'; available: transition, sasrec")
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
        sasrec.training = .init(users: dataset.sequences.count, items: split.items.count,
                                interactions: split.train.reduce(0) { $0 + $1.count }, source: "\(data) (holdout \(holdout.rawValue))")
        let trainer = SASRecTrainer(model: sasrec)
        let checkpointPath = checkpoint ?? out + ".ckpt"
        if resume, FileManager.default.fileExists(atPath: checkpointPath) {
            try trainer.resume(from: checkpointPath)
            print("resumed from \(checkpointPath) after epoch \(trainer.completedEpochs)")
        }
        print("training sasrec on \(split.train.count) sequences, \(split.items.count) items, \(split.validation.count) validation cases")
        let printer = ProgressPrinter()
        try trainer.fit(split, checkpoint: checkpointPath, progressInterval: printer.interval, progress: printer.training, log: printer.log)
        let wall = Date().timeIntervalSince(start)
        sasrec.metrics["train_seconds"] = wall
        try sasrec.save(to: out)
        let settings = config.hyperParameters.merging(["data": data, "holdout": holdout.rawValue]) { a, _ in a }
        try TrainingReport.markdown(model: "sasrec", snapshot: out, settings: settings, history: trainer.history,
                                    metrics: sasrec.metrics, wallSeconds: wall).write(toFile: out + ".report.md", atomically: true, encoding: .utf8)
        try TrainingReport.svg(title: "SASRec on \(data)", history: trainer.history).write(toFile: out + ".report.svg", atomically: true, encoding: .utf8)
        print(String(format: "trained sasrec: best validation NDCG@10 %.4f after %d epochs in %@ -> %@ (report: %@.report.md)",
                     trainer.bestNDCG, trainer.completedEpochs, formatDuration(wall), out, out))
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
}
