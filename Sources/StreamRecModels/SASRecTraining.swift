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

public final class SASRecTrainer {
    public let model: SASRec
    public let config: SASRecConfig
    public let optimizer: Adam
    public private(set) var history: [EpochRecord] = []
    public var bestNDCG: Double { stopping.bestNDCG }
    private var stopping = EarlyStopping()
    private var rng: RandomSource
    private var epochsDone = 0

    public init(model: SASRec) {
        self.model = model
        config = model.config
        optimizer = Adam(store: model.store, config: AdamConfig(learningRate: model.config.learningRate, weightDecay: model.config.weightDecay))
        rng = RandomSource(seed: model.config.seed &+ 1)
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
        let tape = Tape(recording: true, training: true, seed: rng.next())
        let h = model.hidden(tape, ids: ids, layout: layout)
        let table = model.store["item_embedding"]
        let loss: Tensor
        switch c.loss {
        case .crossEntropy:
            loss = tape.softmaxCrossEntropy(h, table: table, targets: targets)
        case .sampledSoftmax:
            let negatives = (0..<c.negatives).map { _ in Int32(rng.below(model.items.count)) }
            loss = tape.sampledSoftmaxCrossEntropy(h, table: table, targets: targets, negatives: negatives)
        case .binary:
            var negatives = [Int32](repeating: 0, count: targets.count)
            var start = 0
            for (s, length) in lengths.enumerated() {
                _ = s
                let seen = Set(ids[start..<(start + length)]).union(targets[start..<(start + length)])
                for i in start..<(start + length) {
                    var candidate = Int32(rng.below(model.items.count))
                    var tries = 0
                    while seen.contains(candidate) && tries < 20 { candidate = Int32(rng.below(model.items.count)); tries += 1 }
                    negatives[i] = candidate
                }
                start += length
            }
            loss = tape.binaryCrossEntropy(h, table: table, positives: targets, negatives: negatives)
        }
        tape.backward(loss)
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

    /// Trains up to config.epochs (from where a resumed checkpoint left off), validating every
    /// evalEvery epochs, keeping the best weights and stopping after `patience` validations
    /// without improvement. Writes a checkpoint after every epoch when `checkpoint` is set.
    /// `progressInterval`: seconds between progress calls (a terminal wants ~0.5, a log file less).
    public func fit(_ split: EncodedSplit, checkpoint: String? = nil, progressInterval: Double = 0.5,
                    progress: ((TrainingProgress) -> Void)? = nil, log: ((String) -> Void)? = nil) throws {
        let c = config
        let sequences = Self.trainingWindows(split.train, length: c.maxLength, limit: c.trainWindows)
        let stepsPerEpoch = (sequences.count + c.batchSize - 1) / c.batchSize
        let started = Date()
        var sequencesSeen = 0
        while epochsDone < c.epochs {
            let epoch = epochsDone + 1
            let epochStart = Date()
            var order = Array(sequences.indices)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
            var lossSum = 0.0
            var lastReport = Date.distantPast
            for s in 0..<stepsPerEpoch {
                let batch = order[(s * c.batchSize)..<min(order.count, (s + 1) * c.batchSize)].map { sequences[$0] }
                lossSum += step(batch, lr: c.learningRate)
                sequencesSeen += batch.count
                if let progress, Date().timeIntervalSince(lastReport) > progressInterval || s == stepsPerEpoch - 1 {
                    lastReport = Date()
                    let elapsed = Date().timeIntervalSince(started)
                    let rate = Double(sequencesSeen) / max(elapsed, 1e-9)
                    let remaining = Double((c.epochs - epoch) * sequences.count + (sequences.count - (s + 1) * c.batchSize))
                    progress(TrainingProgress(epoch: epoch, epochs: c.epochs, step: s + 1, steps: stepsPerEpoch,
                                              loss: lossSum / Double(s + 1), sequencesPerSecond: rate, eta: max(0, remaining) / rate))
                }
            }
            let trainingSeconds = Date().timeIntervalSince(epochStart)
            var record = EpochRecord(epoch: epoch, loss: lossSum / Double(max(1, stepsPerEpoch)), seconds: trainingSeconds,
                                     sequencesPerSecond: Double(sequences.count) / trainingSeconds)
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
            // Wall time of the epoch, validation included: summed over the history it is the
            // run's training time, across resumes.
            record.seconds = Date().timeIntervalSince(epochStart)
            history.append(record)
            if let checkpoint { try saveCheckpoint(checkpoint) }
            if stop { break }
        }
        stopping.restoreBest(into: model.store)
        model.metrics["validation_ndcg10"] = bestNDCG
        model.metrics["epochs"] = Double(epochsDone)
        model.metrics["train_seconds"] = history.reduce(0) { $0 + $1.seconds }
    }

    /// NDCG@10 and HR@10 on validation cases, full ranking with the history excluded.
    public func validate(_ cases: [(history: [Int32], target: Int32)]) -> (ndcg: Double, hr: Double) {
        guard !cases.isEmpty else { return (0, 0) }
        let v = model.items.count, batch = 256
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: batch * v)
        defer { scores.deallocate() }
        var ndcg = 0.0, hits = 0.0
        var start = 0
        while start < cases.count {
            let chunk = cases[start..<min(cases.count, start + batch)]
            model.scoreAll(histories: chunk.map(\.history), into: scores)
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

    // MARK: - checkpoints

    static let checkpointKind = "sasrec-checkpoint"

    /// Weights, Adam moments, the RNG, epoch counters and history: everything to continue as if
    /// never stopped.
    public func saveCheckpoint(_ path: String) throws {
        var hyper = config.hyperParameters
        let encoder = JSONEncoder()
        hyper["epochs_done"] = "\(epochsDone)"
        hyper["adam_step"] = "\(optimizer.step)"
        hyper.merge(stopping.checkpointFields) { _, new in new }
        hyper["rng"] = rng.state.map(String.init).joined(separator: ",")
        hyper["history"] = String(decoding: try encoder.encode(history), as: UTF8.self)
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
            throw ModelError(.badSnapshot, "checkpoint \(path): holds '\(snapshot.manifest.kind)', not a SASRec checkpoint; delete it or pass another --checkpoint")
        }
        // The architecture and data settings must match; how long and how fast to go on may change
        // (a resumed run may add epochs or lower the learning rate once validation plateaus).
        let adjustable: Set<String> = ["epochs", "learning_rate"]
        for (key, value) in config.hyperParameters where !adjustable.contains(key) && p[key] != value {
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
