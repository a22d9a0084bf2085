import ArgumentParser
import Foundation
import StreamRecModels

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model from interaction sequences and write a snapshot.",
        discussion: "sasrec and the diffusion models (diffurec, diffurecsys-v1, diffurecsys-v2) write a checkpoint every epoch (OUT.ckpt) and resume from it with --resume; a report (OUT.report.md, OUT.report.svg) lands beside the snapshot. Options without a value take the model's defaults (sasrec: the SASRec paper's; diffusion: DiffuRecSys section 6.2).")

    @OptionGroup var common: CommonOptions
    @Option(help: "Model kind: transition, sasrec, llm2sasrec (SASRec initialised from text embeddings), llmseqsim (no training: a snapshot of the item vectors), diffurec, diffurecsys-v1, diffurecsys-v2.") var model: String = "transition"
    @Option(help: "Item vectors: an embedding cache from `streamrec embed` (llmseqsim, llm2sasrec, diffurec*), or for diffurec* also a TSV item_id<TAB>v1 v2 ... (reduced to the width by PCA).") var embeddings: String?
    @Option(help: "LLMSeqSim session embedding: mean or decay.") var aggregation: String = "mean"
    @Option(help: "LLMSeqSim decay: items after which a weight halves.") var halfLife: Double = 3
    @Option(help: "Training data: a directory with sequences.txt, a sequences .txt, MovieLens ratings.dat, or user,item,timestamp .csv.") var data: String
    @Option(help: "Snapshot file to write.") var out: String
    @Option(help: "loo: hold out each user's last two items (validation and test targets) so `streamrec evaluate` is honest; none: train on everything (for serving).")
    var holdout: Holdout = .loo

    @Option(help: "Successors kept per item (transition).") var successors: Int = 50

    @Option(help: "Epochs (sasrec 200, diffusion 41).") var epochs: Int?
    @Option(help: "Loss (sasrec): ce (full softmax), bce (one negative, the paper's), sampled.") var loss: String = "ce"
    @Option(help: "Shared negatives per batch for --loss sampled.") var negatives: Int = 256
    @Option(help: "Max sequence length L (sasrec 200: ML-1M, 50: Beauty; diffusion 100, DiffuRec used 50).") var maxLength: Int?
    @Option(help: "Width d (sasrec 64, diffusion 128).") var width: Int?
    @Option(help: "Transformer blocks (sasrec 2, diffusion 4).") var blocks: Int?
    @Option(help: "Attention heads (sasrec 1, diffusion 4).") var heads: Int?
    @Option(help: "Dropout rate (sasrec 0.2, diffusion transformer 0.1).") var dropout: Float?
    @Option(help: "Adam learning rate.") var lr: Float = 1e-3
    @Option(help: "Sequences per batch (sasrec 128; diffusion: prefix samples per batch, 1024).") var batchSize: Int?

    @Option(help: "Diffusion steps T (diffusion models).") var steps: Int = 32
    @Option(help: "Reverse steps K run at inference and validation (<= T; strided; default 1, which ranks as 32 do: docs/benchmarks.md).") var sampleSteps: Int?
    @Option(help: "Seeded sampler runs S averaged at inference (Algorithm 3).") var seeds: Int = 1
    @Option(help: "Offset-noise constant delta_c (diffurecsys-v2: training noise mean 0.1 delta_c).") var deltaC: Float = 1
    @Option(help: "Noise schedule: trunc_lin, linear, cosine.") var schedule: String = "trunc_lin"
    @Option(help: "Dropout on the sequence's item embeddings (diffusion).") var embeddingDropout: Float = 0.3
    @Option(help: "lambda mean and std (diffusion; lambda ~ N(m, m^2) by default m = 0.001).") var lambda: Float = 0.001
    @Option(help: "Adam L2 weight decay (sasrec 0, diffusion 1e-4).") var weightDecay: Float?
    @Option(help: "Fraction of the prefix samples each epoch trains on, drawn afresh every epoch (diffusion; 1 = all, the paper's; a budget for long histories such as ML-1M).") var prefixFraction: Double = 1
    @Option(help: "Multiply the learning rate by --decay-gamma every this many epochs (diffusion).") var decayEvery: Int = 30
    @Option(help: "Learning-rate decay factor (diffusion).") var decayGamma: Float = 0.1
    @Option(help: "Gradient-norm clip, 0 = off.") var clipNorm: Float = 0
    @Option(help: "diffurecsys-v1/v2: which side of the cross-attention queries: session (ours) or noise (the authors' code).") var crossQuery = "session"
    @Option(help: "Diffusion models: dropout on the residual stream after each block (0, the paper's; DiffuRec's code uses its dropout, 0.1).") var blockOutputDropout: Float = 0
    @Option(help: "Diffusion models: item-table init, 0 = Xavier-normal (the paper's); > 0 = N(0, std^2) (1 = DiffuRec's public code).") var itemInitStd: Float = 0
    @Option(help: "sasrec initialisation: 0 = Xavier-normal per matrix; > 0 = N(0, std^2) for every matrix and embedding (e.g. 0.02).") var initStd: Float = 0
    @Option(help: "sasrec training windows per sequence: 1 = the last L+1 items (the paper's); n = also up to n-1 earlier windows of long histories; 0 = all.") var trainWindows: Int = 1
    @Option(help: "Validate every N epochs.") var evalEvery: Int = 5
    @Option(help: "Stop after this many validations without improvement.") var patience: Int = 4
    @Option(help: "Random seed.") var seed: UInt64 = 42
    @Option(help: "Checkpoint path (default OUT.ckpt).") var checkpoint: String?
    @Flag(help: "Continue from the checkpoint if it exists.") var resume = false

    enum Holdout: String, ExpressibleByArgument, CaseIterable {
        case loo, none
    }

    func run() throws {
        common.startKernels(common.makeLogger("streamrec.train"))
        do {
            switch model {
            case "transition": try trainTransition()
            case "sasrec", "llm2sasrec": try trainSASRec()
            case LLMSeqSim.kind: try buildLLMSeqSim()
            case let kind where DiffuRecConfig.Variant(rawValue: kind) != nil: try trainDiffuRec(DiffuRecConfig.Variant(rawValue: kind)!)
            default: throw ValidationError("unknown model '\(model)'; available: transition, sasrec, llm2sasrec, llmseqsim, diffurec, diffurecsys-v1, diffurecsys-v2")
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
        let width = width ?? 64, heads = heads ?? 1
        guard width % heads == 0 else { throw ValidationError("--width \(width) must be a multiple of --heads \(heads)") }
        let start = Date()
        let dataset = try SequenceDataset.load(path: data)
        var split = EncodedSplit(dataset)
        if holdout == .none {
            // Serving: every interaction trains; validation keeps its (now optimistic) role of picking the epoch.
            split.train = dataset.sequences.map { $0.items.map { split.rowOf[$0]! } }
        }
        var config = SASRecConfig()
        config.epochs = epochs ?? 200; config.loss = lossKind; config.negatives = negatives; config.maxLength = maxLength ?? 200
        config.width = width; config.blocks = blocks ?? 2; config.heads = heads; config.dropout = dropout ?? 0.2
        config.learningRate = lr; config.batchSize = batchSize ?? 128; config.evalEvery = evalEvery; config.patience = patience
        config.seed = seed; config.weightDecay = weightDecay ?? 0; config.clipNorm = clipNorm; config.initStd = initStd
        guard trainWindows >= 0 else { throw ValidationError("--train-windows \(trainWindows) must be 0 (all) or a positive count") }
        config.trainWindows = trainWindows
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
        let printer = ProgressPrinter()
        try trainer.fit(split, checkpoint: checkpointPath, progressInterval: printer.interval, progress: printer.training, log: printer.log)
        // Training time across resumes (sum of epoch wall times); this invocation's wall time is printed too.
        let wall = sasrec.metrics["train_seconds"] ?? Date().timeIntervalSince(start)
        try sasrec.save(to: out)
        let settings = config.hyperParameters.merging(["data": data, "holdout": holdout.rawValue, "init": model == "llm2sasrec" ? "llm2sasrec (\(embeddings ?? ""))" : "random"]) { a, _ in a }
        try TrainingReport.markdown(model: model, snapshot: out, settings: settings, history: trainer.history,
                                    metrics: sasrec.metrics, wallSeconds: wall).write(toFile: out + ".report.md", atomically: true, encoding: .utf8)
        try TrainingReport.svg(title: "\(model == "llm2sasrec" ? "LLM2SASRec" : "SASRec") on \(data)", history: trainer.history).write(toFile: out + ".report.svg", atomically: true, encoding: .utf8)
        print(String(format: "trained \(model): best validation NDCG@10 %.4f after %d epochs, %@ of training (this run %@) -> %@ (report: %@.report.md)",
                     trainer.bestNDCG, trainer.completedEpochs, formatDuration(wall), formatDuration(Date().timeIntervalSince(start)), out, out))
    }
}

extension Train {
    private func trainDiffuRec(_ variant: DiffuRecConfig.Variant) throws {
        guard let scheduleKind = DiffuRecConfig.Schedule(rawValue: schedule) else {
            throw ValidationError("unknown --schedule '\(schedule)'; use trunc_lin, linear or cosine")
        }
        var config = DiffuRecConfig()
        config.variant = variant
        config.width = width ?? 128; config.blocks = blocks ?? 4; config.heads = heads ?? 4; config.maxLength = maxLength ?? 100
        config.dropout = dropout ?? 0.1; config.embeddingDropout = embeddingDropout; config.steps = steps
        config.sampleSteps = min(sampleSteps ?? 1, steps); config.seeds = seeds; config.offsetDelta = deltaC
        config.schedule = scheduleKind; config.lambdaMean = lambda; config.lambdaStd = lambda
        config.learningRate = lr; config.weightDecay = weightDecay ?? 1e-4; config.decayEvery = decayEvery; config.decayGamma = decayGamma
        config.batchSize = batchSize ?? 1024; config.epochs = epochs ?? 41; config.evalEvery = evalEvery; config.patience = patience
        config.clipNorm = clipNorm; config.seed = seed; config.prefixFraction = prefixFraction
        config.itemInitStd = itemInitStd; config.blockOutputDropout = blockOutputDropout
        guard let query = DiffuRecConfig.CrossQuery(rawValue: crossQuery) else {
            throw ValidationError("unknown --cross-query '\(crossQuery)'; use session (the items ask) or noise (the noised target asks, as the authors' code)")
        }
        config.crossQuery = query
        guard (0..<1).contains(blockOutputDropout) else { throw ValidationError("--block-output-dropout must be in [0, 1), got \(blockOutputDropout)") }
        guard itemInitStd >= 0 else { throw ValidationError("--item-init-std must be >= 0 (0 = Xavier), got \(itemInitStd)") }
        guard prefixFraction > 0, prefixFraction <= 1 else { throw ValidationError("--prefix-fraction must be in (0, 1], got \(prefixFraction)") }
        guard config.width % config.heads == 0 else { throw ValidationError("--width \(config.width) must be a multiple of --heads \(config.heads)") }
        guard config.blocks >= 1 else { throw ValidationError("--blocks must be at least 1, got \(config.blocks)") }
        guard steps >= 1, config.sampleSteps >= 1, seeds >= 1 else { throw ValidationError("--steps, --sample-steps and --seeds must be at least 1") }
        let start = Date()
        let dataset = try SequenceDataset.load(path: data)
        var split = EncodedSplit(dataset)
        if holdout == .none {
            split.train = dataset.sequences.map { $0.items.map { split.rowOf[$0]! } }
        }
        let model = DiffuRec(config: config, items: split.items)
        model.training = .init(users: dataset.sequences.count, items: split.items.count,
                               interactions: split.train.reduce(0) { $0 + $1.count }, source: "\(data) (holdout \(holdout.rawValue))")
        if let embeddings {
            let set = try model.loadItemVectors(path: embeddings)
            print("item table: \(set) of \(split.items.count) rows from \(embeddings)")
        }
        let trainer = DiffuRecTrainer(model: model)
        let checkpointPath = checkpoint ?? out + ".ckpt"
        if resume, FileManager.default.fileExists(atPath: checkpointPath) {
            try trainer.resume(from: checkpointPath)
            print("resumed from \(checkpointPath) after epoch \(trainer.completedEpochs)")
        }
        let samples = DiffuRecTrainer.samples(split.train).count
        let perEpoch = DiffuRecTrainer.samplesPerEpoch(samples, fraction: config.prefixFraction)
        print("training \(variant.rawValue) on \(samples) prefix samples\(perEpoch < samples ? " (\(perEpoch) per epoch, drawn afresh)" : "") of \(split.train.count) sequences, \(split.items.count) items, \(split.validation.count) validation cases (sampler: \(config.sampleSteps) of \(config.steps) steps, \(config.seeds) seed(s))")
        let printer = ProgressPrinter()
        try trainer.fit(split, checkpoint: checkpointPath, progressInterval: printer.interval, progress: { p in
            printer.update(String(format: "epoch %d/%d step %d/%d loss %.4f %.0f samples/s ETA %@", p.epoch, p.epochs, p.step, p.steps, p.loss,
                                  p.sequencesPerSecond, formatDuration(p.eta)))
        }, log: printer.log)
        // Training time across resumes (the trainer's sum of epoch wall times); this run's is printed too.
        let wall = model.metrics["train_seconds"] ?? 0
        try model.save(to: out)
        let settings = config.hyperParameters.merging(["data": data, "holdout": holdout.rawValue]) { a, _ in a }
        try TrainingReport.markdown(model: variant.rawValue, snapshot: out, settings: settings, history: trainer.history,
                                    metrics: model.metrics, wallSeconds: wall).write(toFile: out + ".report.md", atomically: true, encoding: .utf8)
        try TrainingReport.svg(title: "\(variant.rawValue) on \(data)", history: trainer.history).write(toFile: out + ".report.svg", atomically: true, encoding: .utf8)
        print(String(format: "trained %@: best validation NDCG@10 %.4f after %d epochs, %@ of training (this run %@) -> %@ (report: %@.report.md)",
                     variant.rawValue, trainer.bestNDCG, trainer.completedEpochs, formatDuration(wall),
                     formatDuration(Date().timeIntervalSince(start)), out, out))
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
}
