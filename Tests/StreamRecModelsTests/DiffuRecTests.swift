import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

func diffuConfig(_ variant: DiffuRecConfig.Variant) -> DiffuRecConfig {
    var c = DiffuRecConfig()
    c.variant = variant
    c.width = 16; c.blocks = 1; c.heads = 2; c.maxLength = 12; c.dropout = 0.1; c.embeddingDropout = 0.1
    c.steps = 32; c.sampleSteps = 4; c.seeds = 1
    c.batchSize = 64; c.epochs = 20; c.evalEvery = 10; c.patience = 5; c.learningRate = 5e-3; c.weightDecay = 0
    return c
}

/// A model with random (not trained) weights, perturbed so every path matters.
func randomDiffuRec(_ variant: DiffuRecConfig.Variant, items: Int = 30, lambdaMean: Float = 0.001) -> DiffuRec {
    var c = diffuConfig(variant)
    c.lambdaMean = lambdaMean
    c.lambdaStd = lambdaMean
    c.seed = 7
    let model = DiffuRec(config: c, items: (0..<items).map { "i\($0)" })
    var rng = RandomSource(seed: 3)
    for i in 0..<model.store.count { model.store.values[i] += 0.1 * rng.normal() }
    return model
}

func scores(_ model: DiffuRec, _ histories: [[Int32]], seeds: [UInt64], steps: Int) -> [Float] {
    var out = [Float](repeating: 0, count: histories.count * model.items.count)
    out.withUnsafeMutableBufferPointer { model.scoreAll(histories: histories, seeds: seeds, sampleSteps: steps, into: $0.baseAddress!) }
    return out
}

@Suite struct DiffuRecScheduleTests {
    @Test func truncatedLinearEndpointsMatchTheFormulaAndAlphaBarFalls() {
        let s = DiffusionSchedule(.truncatedLinear, steps: 32)
        let scale = 1000.0 / 32
        #expect(abs(s.betas[0] - (scale * 1e-4 + 0.01)) < 1e-12 && abs(s.betas[0] - 0.013125) < 1e-12)
        #expect(abs(s.betas[31] - (scale * 0.02 + 0.01)) < 1e-12 && abs(s.betas[31] - 0.635) < 1e-12)
        for kind in DiffuRecConfig.Schedule.allCases {
            let schedule = DiffusionSchedule(kind, steps: 32)
            #expect(schedule.betas.allSatisfy { $0 > 0 && $0 < 1 }, "\(kind)")
            #expect(zip(schedule.alphaBars, schedule.alphaBars.dropFirst()).allSatisfy { $0 > $1 }, "\(kind) abar must fall")
            #expect(schedule.alphaBars.first! < 1 && schedule.alphaBars.last! > 0)
        }
        // Small T would push the linear forms past 1: clipped.
        #expect(DiffusionSchedule(.truncatedLinear, steps: 8).betas.allSatisfy { $0 <= 0.999 })
    }

    @Test func posteriorMeanMatchesAHandComputation() {
        let s = DiffusionSchedule(.truncatedLinear, steps: 32)
        let t = 5
        // By hand from the betas (DDPM eq. 7 with alpha_t = 1 - beta_t).
        var abarPrev = 1.0
        for i in 0..<t { abarPrev *= 1 - s.betas[i] }
        let beta = s.betas[t], abar = abarPrev * (1 - beta)
        let c0 = abarPrev.squareRoot() * beta / (1 - abar)
        let ct = (1 - beta).squareRoot() * (1 - abarPrev) / (1 - abar)
        let variance = (1 - abarPrev) / (1 - abar) * beta
        let p = s.posterior(from: t, to: t - 1)
        #expect(abs(p.coefX0 - c0) < 1e-12 && abs(p.coefXt - ct) < 1e-12 && abs(p.variance - variance) < 1e-12)
        // x0 = 2, x_t = 0.5: mean by hand.
        #expect(abs((p.coefX0 * 2 + p.coefXt * 0.5) - (c0 * 2 + ct * 0.5)) < 1e-12)
        // Noise-free x_t = sqrt(abar_t) x0 must map to sqrt(abar_s) x0, for one step and for jumps.
        for (from, to) in [(5, 4), (20, 3), (31, -1), (9, 0)] {
            let q = s.posterior(from: from, to: to)
            let x0 = 1.7, xt = s.alphaBar(from).squareRoot() * x0
            #expect(abs(q.coefX0 * x0 + q.coefXt * xt - s.alphaBar(to).squareRoot() * x0) < 1e-9, "\(from) -> \(to)")
        }
        #expect(s.posterior(from: 3, to: -1).variance == 0)
    }

    @Test func samplingPlans() {
        let s = DiffusionSchedule(.truncatedLinear, steps: 32)
        #expect(s.samplingPlan(32) == Array((0..<32).reversed()))
        #expect(s.samplingPlan(4) == [31, 23, 15, 7])
        #expect(s.samplingPlan(1) == [31])
        #expect(s.samplingPlan(100) == s.samplingPlan(32))
    }
}

@Suite struct DiffuRecSamplerTests {
    let histories: [[Int32]] = [[1, 2, 3, 4], [], [7], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12, 13, 14]]

    @Test(arguments: DiffuRecConfig.Variant.allCases)
    func seedAveragedInferenceIsDeterministicPerSeedsAndBatchIndependent(variant: DiffuRecConfig.Variant) {
        let model = randomDiffuRec(variant, lambdaMean: 0.5)
        let a = scores(model, histories, seeds: [1, 2, 3], steps: 4)
        let b = scores(model, histories, seeds: [1, 2, 3], steps: 4)
        let c = scores(model, histories, seeds: [4, 5, 6], steps: 4)
        #expect(a == b)
        #expect(a != c)
        #expect(a[30..<60].allSatisfy { $0 == 0 }, "an empty history scores 0")
        // log of an averaged distribution: the probabilities of a row sum to 1.
        let mass = a[0..<30].reduce(Float(0)) { $0 + Foundation.exp($1) }
        #expect(abs(mass - 1) < 1e-4)
        // A user's answer does not depend on who shares the batch.
        let alone = scores(model, [histories[3]], seeds: [1, 2, 3], steps: 4)
        #expect(zip(alone, a[90..<120]).allSatisfy { abs($0 - $1) < 1e-4 })
        // Seed averaging = log-mean of the single-seed distributions.
        let singles = [UInt64(1), 2, 3].map { scores(model, [histories[0]], seeds: [$0], steps: 4) }
        for j in 0..<30 {
            let mean = singles.map { Foundation.exp($0[j]) }.reduce(0, +) / 3
            #expect(abs(Foundation.log(mean) - a[j]) < 1e-3)
        }
    }

    /// DDPM's reverse loop written out step by step (eqs. 21-23 with alpha_t = 1 - beta_t,
    /// std sqrt(beta_tilde), x0_hat at the end), drawing randomness in the sampler's order.
    func referenceSample(_ model: DiffuRec, window: [Int32], seed: UInt64) -> [Float] {
        let c = model.config, d = c.width, s = model.schedule
        var rng = DiffuRec.sequenceGenerator(seed: seed, window: window[...])
        var x = (0..<d).map { _ in rng.normal() }
        let layout = SequenceLayout(lengths: [window.count])
        for t in (0..<c.steps).reversed() {
            let tape = Tape(recording: false, training: false)
            let lambda = Tensor((0..<(window.count * d)).map { _ in c.lambdaMean + c.lambdaStd * rng.normal() }, shape: [window.count, d])
            let e = model.embedSequence(tape, ids: window)
            let x0 = model.approximate(tape, sequence: e, cross: model.crossAttentionSide(tape, e), layout: layout,
                                       xt: Tensor(x, shape: [1, d]), steps: [t], lambda: lambda).values
            if t == 0 { return x0 }
            let beta = s.betas[t], abar = s.alphaBars[t], abarPrev = s.alphaBars[t - 1]
            let c0 = Float(abarPrev.squareRoot() * beta / (1 - abar)), ct = Float((1 - beta).squareRoot() * (1 - abarPrev) / (1 - abar))
            let sd = Float(((1 - abarPrev) / (1 - abar) * beta).squareRoot())
            x = (0..<d).map { c0 * x0[$0] + ct * x[$0] + sd * rng.normal() }
        }
        return x
    }

    @Test func theSamplerScorerOverridesKAndS() {
        let model = randomDiffuRec(.crossAttention, lambdaMean: 0.5)
        let histories: [[Int32]] = [[1, 2, 3], [4], [5, 6, 7, 8]]
        func run(_ scorer: any CatalogScorer) -> [Float] {
            var out = [Float](repeating: 0, count: histories.count * model.items.count)
            out.withUnsafeMutableBufferPointer { scorer.scoreAll(histories: histories, into: $0.baseAddress!) }
            return out
        }
        let seeds = (0..<UInt64(3)).map { model.config.inferenceSeed &+ $0 }
        #expect(run(DiffuRecSamplerScorer(model: model, sampleSteps: 2, seeds: 3)) == scores(model, histories, seeds: seeds, steps: 2))
        // The configured sampler (K = 4, S = 1) is what the model itself scores with.
        #expect(run(DiffuRecSamplerScorer(model: model, sampleSteps: 4, seeds: 1)) == run(model))
        // K is clamped to T.
        #expect(DiffuRecSamplerScorer(model: model, sampleSteps: 99, seeds: 1).sampleSteps == model.config.steps)
    }

    @Test(arguments: [DiffuRecConfig.Variant.diffurec, .crossAttention])
    func theFinalBlockReadOnlyAtTheLastPositionEqualsTheFullBlock(variant: DiffuRecConfig.Variant) {
        var c = diffuConfig(variant)
        c.blocks = 3; c.seed = 5
        let model = DiffuRec(config: c, items: (0..<30).map { "i\($0)" })
        var rng = RandomSource(seed: 9)
        for i in 0..<model.store.count { model.store.values[i] += 0.1 * rng.normal() }
        let layout = SequenceLayout(lengths: [4, 1, 6])
        let ids: [Int32] = [1, 2, 3, 4, 7, 9, 8, 7, 6, 5, 4]
        let tape = Tape(recording: false, training: false)
        let e = model.embedSequence(tape, ids: ids), cross = model.crossAttentionSide(tape, e)
        let xt = Tensor((0..<(3 * 16)).map { _ in rng.normal() }, shape: [3, 16])
        let lambda = Tensor((0..<(layout.total * 16)).map { _ in 0.5 + 0.5 * rng.normal() }, shape: [layout.total, 16])
        let fast = model.approximate(tape, sequence: e, cross: cross, layout: layout, xt: xt, steps: [31, 7, 0], lambda: lambda).values
        var z = model.approximatorInput(tape, sequence: e, cross: cross, layout: layout, xt: xt, steps: [31, 7, 0], lambda: lambda)
        for block in model.blocks { z = block(tape, z, .full(layout)) }
        let reference = tape.layerNorm(tape.gather(z, layout.lastRows), model.store["final_ln.gamma"], model.store["final_ln.beta"]).values
        #expect(zip(fast, reference).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test(arguments: [DiffuRecConfig.Variant.diffurec, .crossAttention])
    func stridedSamplingWithKEqualTEqualsTheFullSampler(variant: DiffuRecConfig.Variant) {
        let model = randomDiffuRec(variant, lambdaMean: 0.5)
        let windows: [ArraySlice<Int32>] = [[1, 2, 3, 4], [7], [9, 8, 7, 6, 5]]
        let sampled = model.sample(windows: windows, seed: 11, sampleSteps: 32)
        for (i, w) in windows.enumerated() {
            let reference = referenceSample(model, window: Array(w), seed: 11)
            let got = Array(sampled[(i * 16)..<((i + 1) * 16)])
            #expect(zip(reference, got).allSatisfy { abs($0 - $1) < 1e-4 }, "window \(i)")
        }
        // Fewer steps is a different (cheaper) sampler.
        #expect(model.sample(windows: windows, seed: 11, sampleSteps: 4) != sampled)
    }

    @Test func offsetNoiseHasTheConfiguredMean() {
        var c = diffuConfig(.offsetNoise)
        c.offsetDelta = 2
        let v2 = DiffuRec(config: c, items: ["a", "b"])
        var rng = RandomSource(seed: 1)
        let n = 200_000
        let noise = v2.trainingNoise(n, rng: &rng)
        let mean = noise.reduce(0.0) { $0 + Double($1) } / Double(n)
        let variance = noise.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(n)
        // 0.1 * delta_c = 0.2; the standard error of the mean is 1/sqrt(n) ~ 0.0022.
        #expect(abs(mean - 0.2) < 0.01, "mean \(mean)")
        #expect(abs(variance - 1) < 0.02, "variance \(variance)")
        for variant in [DiffuRecConfig.Variant.diffurec, .crossAttention] {
            var other = c
            other.variant = variant
            let baseline = DiffuRec(config: other, items: ["a", "b"]).trainingNoise(n, rng: &rng)
            #expect(abs(baseline.reduce(0.0) { $0 + Double($1) } / Double(n)) < 0.01)
        }
    }
}

@Suite struct DiffuRecTrainingTests {
    @Test(arguments: DiffuRecConfig.Variant.allCases)
    func learnsASequentialRuleFarBeyondChance(variant: DiffuRecConfig.Variant) throws {
        let split = EncodedSplit(cyclicSessions(users: 200, items: 30, length: 10, seed: 1))
        let model = DiffuRec(config: diffuConfig(variant), items: split.items)
        let trainer = DiffuRecTrainer(model: model)
        let before = trainer.validate(split.validation).ndcg
        try trainer.fit(split)
        let after = trainer.validate(split.validation).ndcg
        // With the 8 history items excluded, 22 candidates remain: chance NDCG@10 is ~0.25-0.3;
        // the rule makes the answer certain.
        #expect(before < 0.45)
        #expect(after > 0.8, "validation NDCG@10 \(after) for \(variant.rawValue)")
        #expect(trainer.history.last!.loss < trainer.history.first!.loss)
    }

    @Test func everyPrefixIsASample() {
        let samples = DiffuRecTrainer.samples([[1, 2, 3], [4], [5, 6]])
        #expect(samples == [DiffuRecSample(sequence: 0, length: 1), DiffuRecSample(sequence: 0, length: 2), DiffuRecSample(sequence: 2, length: 1)])
    }

    @Test func aPrefixFractionTrainsOnAFreshPartOfTheSamplesEachEpoch() throws {
        // The loop itself: 30 of 100 samples an epoch, no repeats within one, new ones across.
        let loop = EpochLoop(optimizer: Adam(store: ParameterStore([("w", [1])]), config: AdamConfig()), seed: 5)
        var epochs: [[Int]] = [[]]
        try loop.run(samples: 100, .init(epochs: 3, batchSize: 8, evalEvery: 10, patience: 1, samplesPerEpoch: 30),
                     progressInterval: 1, progress: { p in if p.step == p.steps { epochs.append([]) } }, log: nil, checkpoint: nil,
                     step: { batch in epochs[epochs.count - 1] += batch; return 0 }, validate: { (0, 0) })
        epochs.removeLast()
        #expect(epochs.count == 3 && epochs.allSatisfy { $0.count == 30 && Set($0).count == 30 })
        #expect(Set(epochs.joined()).count > 45)

        // The trainer: steps per epoch follow the fraction, and the setting is part of the
        // checkpoint's identity (a run with another fraction is refused).
        let dir = try TemporaryDirectory()
        let split = EncodedSplit(cyclicSessions(users: 40, items: 20, length: 8, seed: 4))
        var config = diffuConfig(.offsetNoise)
        config.epochs = 2; config.batchSize = 16; config.prefixFraction = 0.25
        let total = DiffuRecTrainer.samples(split.train).count
        let perEpoch = DiffuRecTrainer.samplesPerEpoch(total, fraction: 0.25)
        #expect(perEpoch == Int((Double(total) / 4).rounded()))
        let trainer = DiffuRecTrainer(model: DiffuRec(config: config, items: split.items))
        try trainer.fit(split, checkpoint: dir.path("f.ckpt"))
        #expect(trainer.optimizer.step == 2 * ((perEpoch + 15) / 16))
        #expect(config.hyperParameters["prefix_fraction"] == "0.25")
        #expect(diffuConfig(.offsetNoise).hyperParameters["prefix_fraction"] == "1.0")
        var all = config
        all.prefixFraction = 1
        let refused = modelError { try DiffuRecTrainer(model: DiffuRec(config: all, items: split.items)).resume(from: dir.path("f.ckpt")) }
        #expect(refused?.message.contains("prefix_fraction") == true)
    }

    @Test func theDiffuRecCodeOptionsChangeOnlyWhatTheySay() throws {
        let items = (0..<200).map { "i\($0)" }
        var xavier = diffuConfig(.diffurec)
        xavier.seed = 3
        var normal = xavier
        normal.itemInitStd = 1
        let a = DiffuRec(config: xavier, items: items), b = DiffuRec(config: normal, items: items)
        func std(_ m: DiffuRec) -> Double {
            let v = m.store["item_embedding"].values
            return (v.reduce(0.0) { $0 + Double($1 * $1) } / Double(v.count)).squareRoot()
        }
        // 3,200 draws: the sample std is within ~3% of the true one.
        #expect(abs(std(a) - Double((2 / Float(200 + 16)).squareRoot())) < 0.01, "Xavier std \(std(a))")
        #expect(abs(std(b) - 1) < 0.06, "N(0, 1) std \(std(b))")
        for entry in a.store.entries where entry.name != "item_embedding" {
            #expect(a.store[entry.name].values == b.store[entry.name].values, "\(entry.name) changed")
        }

        // Block-output dropout acts in training only: same weights, same inference scores; a
        // training forward differs.
        var dropped = xavier
        dropped.blockOutputDropout = 0.5
        let c = DiffuRec(config: dropped, items: items)
        c.store.values.update(from: a.store.values, count: a.store.count)
        let histories: [[Int32]] = [[1, 2, 3], [7, 9]]
        #expect(scores(a, histories, seeds: [1], steps: 2) == scores(c, histories, seeds: [1], steps: 2))
        func trainingForward(_ m: DiffuRec) -> [Float] {
            let tape = Tape(recording: false, training: true, seed: 4)
            let layout = SequenceLayout(lengths: [3, 2])
            let e = m.embedSequence(tape, ids: [1, 2, 3, 7, 9])
            let xt = Tensor(zeros: [2, 16]), lambda = Tensor(zeros: [5, 16])
            return m.approximate(tape, sequence: e, cross: nil, layout: layout, xt: xt, steps: [3, 9], lambda: lambda).values
        }
        #expect(trainingForward(a) != trainingForward(c))

        // Both are part of a checkpoint's identity (a snapshot without them decodes to the defaults).
        #expect(xavier.hyperParameters["item_init_std"] == "0.0" && xavier.hyperParameters["block_output_dropout"] == "0.0")
        #expect(normal.hyperParameters["item_init_std"] == "1.0" && dropped.hyperParameters["block_output_dropout"] == "0.5")
        let dir = try TemporaryDirectory()
        let split = EncodedSplit(cyclicSessions(users: 30, items: 20, length: 6, seed: 4))
        var small = xavier
        small.epochs = 1; small.blockOutputDropout = 0.1
        try DiffuRecTrainer(model: DiffuRec(config: small, items: split.items)).fit(split, checkpoint: dir.path("d.ckpt"))
        let refused = modelError { try DiffuRecTrainer(model: DiffuRec(config: xavier, items: split.items)).resume(from: dir.path("d.ckpt")) }
        #expect(refused?.message.contains("block_output_dropout") == true)
    }

    @Test func theNoiseQueryOrientationIsAnotherFunctionThatSurvivesASnapshot() throws {
        // The authors' code lets the noised target ask and the items answer. Same weights, other
        // function; the snapshot keeps the orientation (it changes inference).
        let session = randomDiffuRec(.crossAttention, lambdaMean: 0.5)
        var c = session.config
        c.crossQuery = .noise
        let noise = DiffuRec(config: c, items: session.items)
        noise.store.values.update(from: session.store.values, count: session.store.count)
        let histories: [[Int32]] = [[1, 2, 3, 4], [7, 9]]
        let a = scores(session, histories, seeds: [1], steps: 2), b = scores(noise, histories, seeds: [1], steps: 2)
        #expect(zip(a, b).contains { abs($0 - $1) > 1e-3 })
        let dir = try TemporaryDirectory()
        try noise.save(to: dir.path("n.snap"))
        let loaded = try DiffuRec.load(path: dir.path("n.snap"))
        #expect(loaded.config.crossQuery == .noise)
        #expect(scores(loaded, histories, seeds: [1], steps: 2) == b)
        #expect(session.config.hyperParameters["cross_query"] == "session" && c.hyperParameters["cross_query"] == "noise")
    }

    @Test func snapshotRoundTripGivesTheSameScoresAndRefusesCorruption() throws {
        let dir = try TemporaryDirectory()
        let split = EncodedSplit(cyclicSessions(users: 50, items: 20, length: 8, seed: 2))
        for variant in DiffuRecConfig.Variant.allCases {
            var config = diffuConfig(variant)
            config.epochs = 1
            let model = DiffuRec(config: config, items: split.items)
            try DiffuRecTrainer(model: model).fit(split)
            let path = dir.path("\(variant.rawValue).snap")
            try model.save(to: path)
            let loaded = try DiffuRec.load(path: path)
            #expect(loaded.kind == variant.rawValue && loaded.config.variant == variant)
            #expect(loaded.items == model.items && loaded.version == model.version && !loaded.version.isEmpty)
            let histories: [[Int32]] = [[1, 2, 3], [], [5]]
            var a = [Float](repeating: 0, count: 3 * 20), b = a
            a.withUnsafeMutableBufferPointer { model.scoreAll(histories: histories, into: $0.baseAddress!) }
            b.withUnsafeMutableBufferPointer { loaded.scoreAll(histories: histories, into: $0.baseAddress!) }
            #expect(a == b)
            // Through the evaluator's dispatch too.
            #expect(try loadScorer(snapshot: Snapshot.read(path: path)) is DiffuRec)
        }
        let path = dir.path("diffurecsys-v1.snap")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count - 100] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: dir.path("bad.snap")))
        let error = modelError { _ = try DiffuRec.load(path: dir.path("bad.snap")) }
        #expect(error?.code == .badSnapshot && error?.message.contains("checksum") == true)

        let nan = DiffuRec(config: diffuConfig(.diffurec), items: split.items)
        nan.store.values[nan.store.entry("step1.weight")!.offset] = .nan
        try nan.save(to: dir.path("nan.snap"))
        #expect(modelError { _ = try DiffuRec.load(path: dir.path("nan.snap")) }?.message.contains("step1.weight") == true)

        try TransitionModel.train(sequences: [["a", "b"]]).save(to: dir.path("t.snap"))
        #expect(modelError { _ = try DiffuRec.load(path: dir.path("t.snap")) }?.message.contains("'transition'") == true)
    }

    @Test func resumingACheckpointContinuesExactly() throws {
        let dir = try TemporaryDirectory()
        let split = EncodedSplit(cyclicSessions(users: 40, items: 20, length: 8, seed: 3))
        var config = diffuConfig(.crossAttention)
        config.epochs = 4; config.evalEvery = 2; config.decayEvery = 3
        let straight = DiffuRec(config: config, items: split.items)
        try DiffuRecTrainer(model: straight).fit(split)

        var half = config
        half.epochs = 2
        let first = DiffuRec(config: half, items: split.items)
        try DiffuRecTrainer(model: first).fit(split, checkpoint: dir.path("c.ckpt"))
        let second = DiffuRec(config: config, items: split.items)
        let trainer = DiffuRecTrainer(model: second)
        try trainer.resume(from: dir.path("c.ckpt"))
        #expect(trainer.completedEpochs == 2)
        try trainer.fit(split)
        #expect(trainer.history.count == 4)
        #expect(second.store.allValues == straight.store.allValues)

        var other = config
        other.variant = .diffurec
        let mismatch = modelError { try DiffuRecTrainer(model: DiffuRec(config: other, items: split.items)).resume(from: dir.path("c.ckpt")) }
        #expect(mismatch?.message.contains("variant") == true)
    }

    @Test func itemVectorsAreReducedByPCAAndKeepTheGeometry() throws {
        let dir = try TemporaryDirectory()
        // 6-wide vectors living in a 3-dimensional subspace: PCA to 4 keeps every distance (up to scale).
        var rng = RandomSource(seed: 5)
        let basis = (0..<3).map { _ in (0..<6).map { _ in rng.normal() } }
        var lines: [String] = []
        var original: [[Float]] = []
        for i in 0..<12 {
            let coefficients = (0..<3).map { _ in rng.normal() }
            let v = (0..<6).map { j in (0..<3).reduce(Float(0)) { $0 + coefficients[$1] * basis[$1][j] } + 3 }
            original.append(v)
            lines.append("i\(i)\t" + v.map { "\($0)" }.joined(separator: " "))
        }
        lines.append("unknown\t1 2 3 4 5 6")
        let path = try dir.file("vectors.tsv", lines.joined(separator: "\n"))
        var config = diffuConfig(.diffurec)
        config.width = 4; config.heads = 2
        let model = DiffuRec(config: config, items: (0..<15).map { "i\($0)" })
        let untouched = Array(model.store.floats("item_embedding")[(12 * 4)...])
        #expect(try model.loadItemVectors(path: path) == 12)
        let table = model.store.floats("item_embedding")
        #expect(Array(table[(12 * 4)...]) == untouched, "items without a vector keep their rows")
        func distance(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot() }
        let row = { (i: Int) in Array(table[(i * 4)..<((i + 1) * 4)]) }
        let ratio = distance(row(0), row(1)) / distance(original[0], original[1])
        let direct = DiffuRec.reduceWidth(original, to: 5, seed: 1)
        #expect(abs(distance(direct[2], direct[7]) - distance(original[2], original[7])) < 1e-4 * distance(original[2], original[7]))
        for (i, j) in [(2, 3), (4, 9), (0, 11)] {
            #expect(abs(distance(row(i), row(j)) / distance(original[i], original[j]) - ratio) < 1e-3 * ratio)
        }
        #expect(modelError { _ = try model.loadItemVectors(path: try dir.file("bad.tsv", "i0\t1 2\ni1\t1 2 3")) }?.code == .badData)
    }

    @Test func theRecommenderBatchesUsersAndHonoursExclusions() {
        let model = randomDiffuRec(.crossAttention)
        let ids = { (item: String) -> ItemID in ItemID(Int(item.dropFirst())! + 1) }
        let recommender = model.bind(itemID: ids)
        let requests = [RecommendationRequest(user: "a", history: [1, 2, 3], k: 5, exclude: [1, 2, 3]),
                        RecommendationRequest(user: "b", history: [10, 11], k: 4, exclude: []),
                        RecommendationRequest(user: "c", history: [999], k: 3, exclude: [])]
        let together = recommender.recommend(requests)
        for (i, request) in requests.enumerated() {
            let alone = recommender.recommend([request])[0]
            #expect(together[i].map(\.item) == alone.map(\.item))
            // "c" knows no item of the model: a cold user, and this bind has no popularity to give.
            #expect(together[i].count == (request.user == "c" ? 0 : request.k) && together[i].allSatisfy { !request.exclude.contains($0.item) })
        }
        #expect(recommender.descriptor.name == "diffurecsys-v1")
    }
}
