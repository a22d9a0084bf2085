// The training loop every trainer shares: shuffled epochs over a list of samples in batches,
// progress reports, validation every few epochs with early stopping (the best weights kept),
// and checkpoints that hold everything needed to continue as if never stopped: weights, Adam
// moments, the RNG, the counters, the epoch history and the best weights. A trainer supplies
// what differs: how one batch trains, and its settings as snapshot hyper-parameters.
import Foundation
import StreamRecNumerics

final class EpochLoop {
    struct Settings {
        var epochs: Int
        var batchSize: Int
        /// Validate every this many epochs (and after the last one).
        var evalEvery: Int
        /// Stop after this many validations without improvement.
        var patience: Int
        /// Samples an epoch trains on: the first this many of the epoch's fresh shuffle of all of
        /// them (nil = all). Lets a budget see different data every epoch instead of a fixed part.
        var samplesPerEpoch: Int? = nil
    }

    let optimizer: Adam
    var store: ParameterStore { optimizer.store }
    /// The trainer's one random stream: the epoch shuffles and whatever its steps draw, in the
    /// order they happen, so a resumed run draws exactly what an uninterrupted one would.
    var rng: RandomSource
    private(set) var history: [EpochRecord] = []
    private(set) var stopping = EarlyStopping()
    private(set) var epochsDone = 0

    init(optimizer: Adam, seed: UInt64) {
        self.optimizer = optimizer
        rng = RandomSource(seed: seed)
    }

    /// Trains up to `settings.epochs` (from where a resumed checkpoint left off) over samples
    /// 0..<count: `step` trains one batch of sample indices and returns its loss, `validate`
    /// gives validation NDCG@10 and HR@10, `checkpoint` runs after every epoch. Ends with the
    /// best validated weights in the store.
    func run(samples count: Int, _ s: Settings, progressInterval: Double,
             progress: ((TrainingProgress) -> Void)?, log: ((String) -> Void)?,
             checkpoint: (() throws -> Void)?,
             step: ([Int]) -> Double, validate: () -> (ndcg: Double, hr: Double)) throws {
        let total = count
        let count = min(total, max(1, s.samplesPerEpoch ?? total))
        let stepsPerEpoch = (count + s.batchSize - 1) / s.batchSize
        let started = Date()
        var seen = 0
        while epochsDone < s.epochs {
            let epoch = epochsDone + 1
            let epochStart = Date()
            var order = Array(0..<total)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
            var lossSum = 0.0
            var lastReport = Date.distantPast
            for b in 0..<stepsPerEpoch {
                let batch = Array(order[(b * s.batchSize)..<min(count, (b + 1) * s.batchSize)])
                lossSum += step(batch)
                seen += batch.count
                if let progress, Date().timeIntervalSince(lastReport) > progressInterval || b == stepsPerEpoch - 1 {
                    lastReport = Date()
                    let rate = Double(seen) / max(Date().timeIntervalSince(started), 1e-9)
                    let remaining = Double((s.epochs - epoch) * count + (count - (b + 1) * s.batchSize))
                    progress(TrainingProgress(epoch: epoch, epochs: s.epochs, step: b + 1, steps: stepsPerEpoch,
                                              loss: lossSum / Double(b + 1), sequencesPerSecond: rate, eta: max(0, remaining) / rate))
                }
            }
            let trainingSeconds = Date().timeIntervalSince(epochStart)
            var record = EpochRecord(epoch: epoch, loss: lossSum / Double(max(1, stepsPerEpoch)), seconds: trainingSeconds,
                                     sequencesPerSecond: Double(count) / trainingSeconds)
            epochsDone = epoch
            var stop = false
            if epoch % max(1, s.evalEvery) == 0 || epoch == s.epochs {
                let (ndcg, hr) = validate()
                record.validationNDCG10 = ndcg
                record.validationHR10 = hr
                stop = stopping.observe(ndcg, patience: s.patience) { store.allValues }
                log?(String(format: "epoch %d: loss %.4f, validation NDCG@10 %.4f HR@10 %.4f (best %.4f)%@", epoch, record.loss, ndcg, hr,
                            stopping.bestNDCG, stop ? ", stopping early" : ""))
            }
            // Wall time of the epoch, validation included: summed over the history it is the
            // run's training time, across resumes.
            record.seconds = Date().timeIntervalSince(epochStart)
            history.append(record)
            try checkpoint?()
            if stop { break }
        }
        stopping.restoreBest(into: store)
    }

    /// What a finished run reports in the snapshot's metrics.
    var metrics: [String: Double] {
        ["validation_ndcg10": stopping.bestNDCG, "epochs": Double(epochsDone), "train_seconds": history.reduce(0) { $0 + $1.seconds }]
    }

    // MARK: - checkpoints

    func writeCheckpoint(to path: String, kind: String, hyperParameters: [String: String], items: [String],
                         training: SnapshotManifest.TrainingSummary) throws {
        var hyper = hyperParameters
        hyper["epochs_done"] = "\(epochsDone)"
        hyper["adam_step"] = "\(optimizer.step)"
        hyper.merge(stopping.checkpointFields) { _, new in new }
        hyper["rng"] = rng.state.map(String.init).joined(separator: ",")
        hyper["history"] = String(decoding: try JSONEncoder().encode(history), as: UTF8.self)
        var writer = SnapshotWriter(kind: kind, items: items, hyperParameters: hyper, training: training)
        let n = store.count
        try writer.add("weights", floats: store.allValues, shape: [n])
        let (m, v) = optimizer.moments
        try writer.add("adam.m", floats: m, shape: [n])
        try writer.add("adam.v", floats: v, shape: [n])
        try stopping.addBest(to: &writer, current: store.allValues)
        try writer.write(to: path)
    }

    /// Restores a checkpoint of `kind` written with the same settings, except the `adjustable`
    /// ones (how long and how fast to go on, inference settings); refuses any other, naming the
    /// setting that differs.
    /// `defaults` gives the value of a setting a checkpoint written before it existed lacks.
    func restoreCheckpoint(from path: String, kind: String, modelName: String, hyperParameters: [String: String],
                           adjustable: Set<String>, defaults: [String: String] = [:], items: [String]) throws {
        let snapshot = try Snapshot.read(path: path)
        let p = snapshot.manifest.hyperParameters
        guard snapshot.manifest.kind == kind else {
            throw ModelError(.badSnapshot, "checkpoint \(path): holds '\(snapshot.manifest.kind)', not a \(modelName) checkpoint; delete it or pass another --checkpoint")
        }
        for key in Set(hyperParameters.keys).union(defaults.keys).sorted() where !adjustable.contains(key) {
            let theirs = p[key] ?? defaults[key], ours = hyperParameters[key] ?? defaults[key]
            guard theirs != ours else { continue }
            throw ModelError(.badSnapshot, "checkpoint \(path): was written with \(key)=\(theirs ?? "absent"), this run has \(ours ?? "absent"); resume with the same settings or delete the checkpoint")
        }
        guard snapshot.manifest.items == items else {
            throw ModelError(.badSnapshot, "checkpoint \(path): its item vocabulary differs from this dataset's; delete the checkpoint to start over")
        }
        let n = store.count
        let weights = try snapshot.floats("weights", shape: [n])
        weights.withUnsafeBufferPointer { store.values.update(from: $0.baseAddress!, count: n) }
        optimizer.restore(step: Int(p["adam_step"] ?? "0") ?? 0, m: try snapshot.floats("adam.m", shape: [n]), v: try snapshot.floats("adam.v", shape: [n]))
        epochsDone = Int(p["epochs_done"] ?? "0") ?? 0
        try stopping.restore(from: p, snapshot, count: n)
        let state = (p["rng"] ?? "").split(separator: ",").compactMap { UInt64($0) }
        if state.count == 4 { rng = RandomSource(state: state) }
        history = (try? JSONDecoder().decode([EpochRecord].self, from: Data((p["history"] ?? "[]").utf8))) ?? []
    }
}

/// NDCG@10 and HR@10 of a scorer on (history, target) cases, full ranking, history excluded
/// (the target itself stays rankable), ties broken toward the smaller row: what every trainer
/// validates with.
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
