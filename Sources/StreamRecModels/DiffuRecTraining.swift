// Training DiffuRec / DiffuRecSys: every prefix of each training sequence is a sample (the
// next item its target), packed batches of windows, one random diffusion step per sample,
// step-decayed Adam with L2 weight decay, validation NDCG@10 through the seed-averaged sampler,
// resumable checkpoints.
import Foundation
import StreamRecNumerics

/// One training sample: sequence `sequence`'s first `length` items predict the next one.
public struct DiffuRecSample: Sendable, Equatable {
    public var sequence: Int
    public var length: Int
}

public final class DiffuRecTrainer: EpochTrainer {
    public let model: DiffuRec
    public let config: DiffuRecConfig
    public var optimizer: Adam { loop.optimizer }
    public var history: [EpochRecord] { loop.history }
    public var bestNDCG: Double { loop.stopping.bestNDCG }
    public var completedEpochs: Int { loop.epochsDone }
    private let loop: EpochLoop

    public init(model: DiffuRec) {
        self.model = model
        config = model.config
        let optimizer = Adam(store: model.store, config: AdamConfig(learningRate: model.config.learningRate, weightDecay: model.config.weightDecay))
        loop = EpochLoop(optimizer: optimizer, seed: model.config.seed &+ 1)
    }

    /// Every prefix of length >= 1 of every sequence (target = the next item).
    public static func samples(_ sequences: [[Int32]]) -> [DiffuRecSample] {
        var out: [DiffuRecSample] = []
        for (s, sequence) in sequences.enumerated() where sequence.count >= 2 {
            for length in 1..<sequence.count { out.append(DiffuRecSample(sequence: s, length: length)) }
        }
        return out
    }

    /// How many of `total` prefix samples an epoch trains on at `fraction` (at least one).
    public static func samplesPerEpoch(_ total: Int, fraction: Double) -> Int {
        max(1, min(total, Int((Double(total) * fraction).rounded())))
    }

    /// One batch of (history, target) pairs: forward diffusion, approximator, CE, update.
    @discardableResult
    public func step(histories: [ArraySlice<Int32>], targets: [Int32], lr: Float) -> Double {
        let c = config, d = c.width
        var ids: [Int32] = [], lengths: [Int] = [], kept: [Int32] = []
        for (history, target) in zip(histories, targets) where !history.isEmpty {
            let w = history.suffix(c.maxLength)
            ids.append(contentsOf: w)
            lengths.append(w.count)
            kept.append(target)
        }
        guard !ids.isEmpty else { return 0 }
        let b = kept.count
        let layout = SequenceLayout(lengths: lengths)
        let tape = Tape(recording: true, training: true, seed: loop.rng.next())
        let e = model.embedSequence(tape, ids: ids)
        let cross = model.crossAttentionSide(tape, e)
        let steps = (0..<b).map { _ in loop.rng.below(c.steps) }
        // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (eq. 20), x0 = E[target] (gradient flows).
        let x0 = tape.gather(model.store["item_embedding"], kept)
        var signal = [Float](repeating: 0, count: b * d)
        var noise = model.trainingNoise(b * d, rng: &loop.rng)
        for s in 0..<b {
            let abar = model.schedule.alphaBar(steps[s])
            let a = Float(abar.squareRoot()), sigma = Float((1 - abar).squareRoot())
            for j in 0..<d { signal[s * d + j] = a; noise[s * d + j] *= sigma }
        }
        let xt = tape.add(tape.mul(x0, Tensor(signal, shape: [b, d])), Tensor(noise, shape: [b, d]))
        // lambda for the whole batch from the trainer's stream (one "sequence" of N rows).
        var lambdaStream = [RandomSource(seed: loop.rng.next())]
        let lambda = model.lambda(SequenceLayout(lengths: [layout.total]), rngs: &lambdaStream)
        let x0Hat = model.approximate(tape, sequence: e, cross: cross, layout: layout, xt: xt, steps: steps, lambda: lambda)
        let loss = tape.softmaxCrossEntropy(x0Hat, table: model.store["item_embedding"], targets: kept)
        tape.backward(loss)
        if c.clipNorm > 0 { model.store.clipGradNorm(c.clipNorm) }
        optimizer.update(lr: lr)
        return Double(loss.item)
    }

    /// Trains up to config.epochs (from where a resumed checkpoint left off) over every prefix
    /// sample, validating every evalEvery epochs, keeping the best weights and stopping after
    /// `patience` validations without improvement. A checkpoint after every epoch if given.
    public func fit(_ split: EncodedSplit, checkpoint: String? = nil, progressInterval: Double = 0.5,
                    progress: ((TrainingProgress) -> Void)? = nil, log: ((String) -> Void)? = nil) throws {
        let c = config
        let samples = Self.samples(split.train)
        let perEpoch = Self.samplesPerEpoch(samples.count, fraction: c.prefixFraction)
        let stepsPerEpoch = (perEpoch + c.batchSize - 1) / c.batchSize
        let schedule = LearningRateSchedule.step(base: c.learningRate, gamma: c.decayGamma, everyEpochs: c.decayEvery, stepsPerEpoch: stepsPerEpoch)
        try loop.run(samples: samples.count, .init(epochs: c.epochs, batchSize: c.batchSize, evalEvery: c.evalEvery, patience: c.patience,
                                                   samplesPerEpoch: perEpoch),
                     progressInterval: progressInterval, progress: progress, log: log,
                     checkpoint: checkpoint.map { path in { try self.saveCheckpoint(path) } },
                     step: { batch in
                         let chosen = batch.map { samples[$0] }
                         return self.step(histories: chosen.map { split.train[$0.sequence][..<$0.length] },
                                          targets: chosen.map { split.train[$0.sequence][$0.length] },
                                          lr: schedule.rate(at: self.optimizer.step))
                     },
                     validate: { self.validate(split.validation) })
        model.metrics.merge(loop.metrics) { _, new in new }
    }

    /// NDCG@10 and HR@10 on validation cases: the configured sampler (K steps, S seeds), full
    /// ranking with the history excluded.
    public func validate(_ cases: [(history: [Int32], target: Int32)]) -> (ndcg: Double, hr: Double) {
        rankingMetrics(model, cases)
    }

    // MARK: - checkpoints

    static let checkpointKind = "diffurec-checkpoint"

    public func saveCheckpoint(_ path: String) throws {
        try loop.writeCheckpoint(to: path, kind: Self.checkpointKind, hyperParameters: config.hyperParameters,
                                 items: model.items, training: model.training)
    }

    /// Restores a checkpoint written by the same configuration; refuses one from another.
    /// Inference settings (K, S) and the epoch count may change between runs; the training ones
    /// may not.
    public func resume(from path: String) throws {
        try loop.restoreCheckpoint(from: path, kind: Self.checkpointKind, modelName: "DiffuRec", hyperParameters: config.hyperParameters,
                                   adjustable: ["epochs", "sample_steps", "seeds", "inference_seed", "eval_every", "patience"],
                                   defaults: DiffuRecConfig().hyperParameters, items: model.items)
    }
}
