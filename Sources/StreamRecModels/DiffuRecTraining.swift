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

public final class DiffuRecTrainer {
    public let model: DiffuRec
    public let config: DiffuRecConfig
    public let optimizer: Adam
    public private(set) var history: [EpochRecord] = []
    public var bestNDCG: Double { stopping.bestNDCG }
    private var stopping = EarlyStopping()
    private var rng: RandomSource
    private var epochsDone = 0

    public init(model: DiffuRec) {
        self.model = model
        config = model.config
        optimizer = Adam(store: model.store, config: AdamConfig(learningRate: model.config.learningRate, weightDecay: model.config.weightDecay))
        rng = RandomSource(seed: model.config.seed &+ 1)
    }

    /// Every prefix of length >= 1 of every sequence (target = the next item).
    public static func samples(_ sequences: [[Int32]]) -> [DiffuRecSample] {
        var out: [DiffuRecSample] = []
        for (s, sequence) in sequences.enumerated() where sequence.count >= 2 {
            for length in 1..<sequence.count { out.append(DiffuRecSample(sequence: s, length: length)) }
        }
        return out
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
        let tape = Tape(recording: true, training: true, seed: rng.next())
        let e = model.embedSequence(tape, ids: ids)
        let queries = model.crossQueries(tape, e)
        let steps = (0..<b).map { _ in rng.below(c.steps) }
        // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (eq. 20), x0 = E[target] (gradient flows).
        let x0 = tape.gather(model.store["item_embedding"], kept)
        var signal = [Float](repeating: 0, count: b * d)
        var noise = model.trainingNoise(b * d, rng: &rng)
        for s in 0..<b {
            let abar = model.schedule.alphaBar(steps[s])
            let a = Float(abar.squareRoot()), sigma = Float((1 - abar).squareRoot())
            for j in 0..<d { signal[s * d + j] = a; noise[s * d + j] *= sigma }
        }
        let xt = tape.add(tape.mul(x0, Tensor(signal, shape: [b, d])), Tensor(noise, shape: [b, d]))
        // lambda for the whole batch from the trainer's stream (one "sequence" of N rows).
        var lambdaStream = [RandomSource(seed: rng.next())]
        let lambda = model.lambda(SequenceLayout(lengths: [layout.total]), rngs: &lambdaStream)
        let x0Hat = model.approximate(tape, sequence: e, queries: queries, layout: layout, xt: xt, steps: steps, lambda: lambda)
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
        let stepsPerEpoch = (samples.count + c.batchSize - 1) / c.batchSize
        let schedule = LearningRateSchedule.step(base: c.learningRate, gamma: c.decayGamma, everyEpochs: c.decayEvery, stepsPerEpoch: stepsPerEpoch)
        let started = Date()
        var seen = 0
        while epochsDone < c.epochs {
            let epoch = epochsDone + 1
            let epochStart = Date()
            var order = Array(samples.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
            var lossSum = 0.0
            var lastReport = Date.distantPast
            for s in 0..<stepsPerEpoch {
                let batch = order[(s * c.batchSize)..<min(order.count, (s + 1) * c.batchSize)].map { samples[$0] }
                let histories = batch.map { split.train[$0.sequence][..<$0.length] }
                let targets = batch.map { split.train[$0.sequence][$0.length] }
                lossSum += step(histories: histories, targets: targets, lr: schedule.rate(at: optimizer.step))
                seen += batch.count
                if let progress, Date().timeIntervalSince(lastReport) > progressInterval || s == stepsPerEpoch - 1 {
                    lastReport = Date()
                    let rate = Double(seen) / max(Date().timeIntervalSince(started), 1e-9)
                    let remaining = Double((c.epochs - epoch) * samples.count + (samples.count - (s + 1) * c.batchSize))
                    progress(TrainingProgress(epoch: epoch, epochs: c.epochs, step: s + 1, steps: stepsPerEpoch,
                                              loss: lossSum / Double(s + 1), sequencesPerSecond: rate, eta: max(0, remaining) / rate))
                }
            }
            let seconds = Date().timeIntervalSince(epochStart)
            var record = EpochRecord(epoch: epoch, loss: lossSum / Double(max(1, stepsPerEpoch)), seconds: seconds,
                                     sequencesPerSecond: Double(samples.count) / seconds)
            epochsDone = epoch
            var stop = false
            if epoch % max(1, c.evalEvery) == 0 || epoch == c.epochs {
                let (ndcg, hr) = validate(split.validation)
                record.validationNDCG10 = ndcg
                record.validationHR10 = hr
                stop = stopping.observe(ndcg, patience: c.patience) { model.store.allValues }
                log?(String(format: "epoch %d: loss %.4f, validation NDCG@10 %.4f HR@10 %.4f (best %.4f)%@", epoch, record.loss, ndcg, hr, bestNDCG,
                            stop ? ", stopping early" : ""))
            }
            history.append(record)
            if let checkpoint { try saveCheckpoint(checkpoint) }
            if stop { break }
        }
        stopping.restoreBest(into: model.store)
        model.metrics["validation_ndcg10"] = bestNDCG
        model.metrics["epochs"] = Double(epochsDone)
    }

    /// NDCG@10 and HR@10 on validation cases: the configured sampler (K steps, S seeds), full
    /// ranking with the history excluded.
    public func validate(_ cases: [(history: [Int32], target: Int32)]) -> (ndcg: Double, hr: Double) {
        rankingMetrics(model, cases)
    }

    // MARK: - checkpoints

    static let checkpointKind = "diffurec-checkpoint"

    public func saveCheckpoint(_ path: String) throws {
        var hyper = config.hyperParameters
        hyper["epochs_done"] = "\(epochsDone)"
        hyper["adam_step"] = "\(optimizer.step)"
        hyper.merge(stopping.checkpointFields) { _, new in new }
        hyper["rng"] = rng.state.map(String.init).joined(separator: ",")
        hyper["history"] = String(decoding: try JSONEncoder().encode(history), as: UTF8.self)
        var writer = SnapshotWriter(kind: Self.checkpointKind, items: model.items, hyperParameters: hyper, training: model.training)
        let n = model.store.count
        try writer.add("weights", floats: model.store.allValues, shape: [n])
        let (m, v) = optimizer.moments
        try writer.add("adam.m", floats: m, shape: [n])
        try writer.add("adam.v", floats: v, shape: [n])
        try stopping.addBest(to: &writer, current: model.store.allValues)
        try writer.write(to: path)
    }

    /// Restores a checkpoint written by the same configuration; refuses one from another.
    public func resume(from path: String) throws {
        let snapshot = try Snapshot.read(path: path)
        let p = snapshot.manifest.hyperParameters
        guard snapshot.manifest.kind == Self.checkpointKind else {
            throw ModelError(.badSnapshot, "checkpoint \(path): holds '\(snapshot.manifest.kind)', not a DiffuRec checkpoint; delete it or pass another --checkpoint")
        }
        // Inference settings (K, S) may change between runs; the training ones may not.
        let free: Set = ["epochs", "sample_steps", "seeds", "inference_seed"]
        for (key, value) in config.hyperParameters where !free.contains(key) && p[key] != value {
            throw ModelError(.badSnapshot, "checkpoint \(path): was written with \(key)=\(p[key] ?? "absent"), this run has \(value); resume with the same settings or delete the checkpoint")
        }
        guard snapshot.manifest.items == model.items else {
            throw ModelError(.badSnapshot, "checkpoint \(path): its item vocabulary differs from this dataset's; delete the checkpoint to start over")
        }
        let n = model.store.count
        let weights = try snapshot.floats("weights", shape: [n])
        weights.withUnsafeBufferPointer { model.store.values.update(from: $0.baseAddress!, count: n) }
        optimizer.restore(step: Int(p["adam_step"] ?? "0") ?? 0, m: try snapshot.floats("adam.m", shape: [n]), v: try snapshot.floats("adam.v", shape: [n]))
        epochsDone = Int(p["epochs_done"] ?? "0") ?? 0
        try stopping.restore(from: p, snapshot, count: n)
        let state = (p["rng"] ?? "").split(separator: ",").compactMap { UInt64($0) }
        if state.count == 4 { rng = RandomSource(state: state) }
        history = (try? JSONDecoder().decode([EpochRecord].self, from: Data((p["history"] ?? "[]").utf8))) ?? []
    }

    public var completedEpochs: Int { epochsDone }
}

/// NDCG@10 and HR@10 of a scorer on (history, target) cases, full ranking, history excluded
/// (the target itself stays rankable), ties broken toward the smaller row.
func rankingMetrics(_ scorer: any CatalogScorer, _ cases: [(history: [Int32], target: Int32)], batch: Int = 256) -> (ndcg: Double, hr: Double) {
    guard !cases.isEmpty else { return (0, 0) }
    let v = scorer.items.count
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: batch * v)
    defer { scores.deallocate() }
    var ndcg = 0.0, hits = 0.0
    var start = 0
    while start < cases.count {
        let chunk = cases[start..<min(cases.count, start + batch)]
        scorer.scoreAll(histories: chunk.map(\.history), into: scores)
        for (i, testCase) in chunk.enumerated() {
            let row = scores + i * v
            for item in testCase.history where item != testCase.target { row[Int(item)] = -.infinity }
            let target = row[Int(testCase.target)]
            var rank = 1
            for j in 0..<v where row[j] > target || (row[j] == target && j < Int(testCase.target)) { rank += 1 }
            if rank <= 10 { hits += 1; ndcg += 1 / log2(Double(rank) + 1) }
        }
        start = chunk.endIndex
    }
    return (ndcg / Double(cases.count), hits / Double(cases.count))
}
