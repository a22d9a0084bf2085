import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

/// Synthetic sessions with a learnable rule: each user walks a cycle of items with a stride
/// of 1, so the next item is always current + 1 (mod V).
func cyclicSessions(users: Int, items: Int, length: Int, seed: UInt64) -> SequenceDataset {
    var rng = RandomSource(seed: seed)
    let sequences = (0..<users).map { u -> (user: String, items: [String]) in
        let start = rng.below(items)
        return ("u\(u)", (0..<length).map { "i\((start + $0) % items)" })
    }
    return SequenceDataset(sequences: sequences, source: "synthetic")
}

func smallConfig(_ loss: SASRecConfig.Loss = .crossEntropy) -> SASRecConfig {
    var c = SASRecConfig()
    c.width = 16; c.blocks = 2; c.heads = 2; c.maxLength = 12; c.dropout = 0.1
    c.loss = loss; c.negatives = 8; c.batchSize = 32; c.epochs = 30; c.evalEvery = 10; c.patience = 5
    c.learningRate = 5e-3
    return c
}

@Suite struct SASRecTests {
    @Test func trainingWindowsCoverEveryTargetOnce() {
        let sequence = (0..<23).map { Int32($0) }
        // L = 5: windows end at 23, 18, 13, 8, 3; the last holds items 0...2.
        let all = SASRecTrainer.trainingWindows([sequence, [7]], length: 5, limit: 0)
        #expect(all.map(\.first!) == [17, 12, 7, 2, 0])
        #expect(all.map(\.count) == [6, 6, 6, 6, 3])
        let targets = all.flatMap { $0.dropFirst() }.sorted()
        #expect(targets == Array(1..<23))
        #expect(SASRecTrainer.trainingWindows([sequence], length: 5, limit: 1) == [Array(17..<23)])
        #expect(SASRecTrainer.trainingWindows([sequence], length: 5, limit: 2).count == 2)
        #expect(SASRecTrainer.trainingWindows([sequence], length: 30, limit: 0) == [sequence])
    }

    @Test func initialisationIsXavierByDefaultOrAFixedStd() {
        func std(_ model: SASRec, _ name: String) -> Float {
            let v = model.store[name].values
            let mean = v.reduce(0, +) / Float(v.count)
            return (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(v.count)).squareRoot()
        }
        var c = SASRecConfig()
        c.width = 64; c.maxLength = 50
        let xavier = SASRec(config: c, items: (0..<500).map { "i\($0)" })
        c.initStd = 0.02
        let fixed = SASRec(config: c, items: (0..<500).map { "i\($0)" })
        // qkv [64, 192]: Xavier std sqrt(2 / 256) = 0.088.
        #expect(abs(std(xavier, "block0.qkv.weight") - 0.0884) < 0.005)
        #expect(abs(std(fixed, "block0.qkv.weight") - 0.02) < 0.001)
        #expect(abs(std(fixed, "item_embedding") - 0.02) < 0.001)
        #expect(fixed.store["block0.ln1.gamma"].values.allSatisfy { $0 == 1 })
        #expect(c.hyperParameters["init_std"] == "0.02")
    }

    @Test(arguments: [SASRecConfig.Loss.crossEntropy, .binary, .sampledSoftmax])
    func learnsASequentialRuleFarBeyondPopularity(loss: SASRecConfig.Loss) throws {
        let split = EncodedSplit(cyclicSessions(users: 200, items: 30, length: 10, seed: 1))
        let model = SASRec(config: smallConfig(loss), items: split.items)
        let trainer = SASRecTrainer(model: model)
        let before = trainer.validate(split.validation).ndcg
        try trainer.fit(split)
        let after = trainer.validate(split.validation).ndcg
        // Popularity is ~uniform here (NDCG@10 ~ 0.1); the rule makes the answer certain.
        #expect(before < 0.3)
        #expect(after > 0.8, "validation NDCG@10 \(after) with \(loss)")
        #expect(trainer.history.last!.loss < trainer.history.first!.loss)
    }

    @Test func snapshotRoundTripGivesTheSameScoresAndRefusesCorruption() throws {
        let dir = try TemporaryDirectory()
        let split = EncodedSplit(cyclicSessions(users: 50, items: 20, length: 8, seed: 2))
        var config = smallConfig()
        config.epochs = 2
        let model = SASRec(config: config, items: split.items)
        try SASRecTrainer(model: model).fit(split)
        let path = dir.path("m.snap")
        try model.save(to: path)
        let loaded = try SASRec.load(path: path)
        #expect(loaded.items == model.items)
        #expect(loaded.version == model.version && !loaded.version.isEmpty)
        let histories: [[Int32]] = [[1, 2, 3], [], [5]]
        var a = [Float](repeating: 0, count: 3 * 20), b = a
        a.withUnsafeMutableBufferPointer { model.scoreAll(histories: histories, into: $0.baseAddress!) }
        b.withUnsafeMutableBufferPointer { loaded.scoreAll(histories: histories, into: $0.baseAddress!) }
        #expect(a == b)
        #expect(a[20..<40].allSatisfy { $0 == 0 })

        // One flipped byte in the weights: the checksum refuses it.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count - 100] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: dir.path("bad.snap")))
        let error = modelError { _ = try SASRec.load(path: dir.path("bad.snap")) }
        #expect(error?.code == .badSnapshot)
        #expect(error?.message.contains("checksum") == true)

        // A well-formed file whose weights are NaN is refused by name.
        let nan = SASRec(config: config, items: split.items)
        nan.store.values[0] = .nan
        try nan.save(to: dir.path("nan.snap"))
        let nanError = modelError { _ = try SASRec.load(path: dir.path("nan.snap")) }
        #expect(nanError?.message.contains("item_embedding") == true)

        // A transition snapshot is not a SASRec one.
        try TransitionModel.train(sequences: [["a", "b"]]).save(to: dir.path("t.snap"))
        #expect(modelError { _ = try SASRec.load(path: dir.path("t.snap")) }?.message.contains("'transition'") == true)
    }

    @Test func resumingACheckpointContinuesExactly() throws {
        let dir = try TemporaryDirectory()
        let split = EncodedSplit(cyclicSessions(users: 64, items: 20, length: 8, seed: 3))
        var config = smallConfig()
        config.epochs = 4; config.evalEvery = 2
        let straight = SASRec(config: config, items: split.items)
        try SASRecTrainer(model: straight).fit(split)

        var half = config
        half.epochs = 2
        let first = SASRec(config: half, items: split.items)
        try SASRecTrainer(model: first).fit(split, checkpoint: dir.path("c.ckpt"))
        let second = SASRec(config: config, items: split.items)
        let trainer = SASRecTrainer(model: second)
        try trainer.resume(from: dir.path("c.ckpt"))
        #expect(trainer.completedEpochs == 2)
        try trainer.fit(split)
        #expect(trainer.history.count == 4)
        #expect(second.store.allValues == straight.store.allValues)

        // A checkpoint from other settings is refused, naming the setting.
        var other = config
        other.width = 8
        let mismatch = modelError { try SASRecTrainer(model: SASRec(config: other, items: split.items)).resume(from: dir.path("c.ckpt")) }
        #expect(mismatch?.message.contains("width") == true)
        // How long and how fast may change: more epochs, a lower learning rate after a plateau.
        var slower = config
        slower.learningRate = 1e-4; slower.epochs = 9
        let continued = SASRecTrainer(model: SASRec(config: slower, items: split.items))
        try continued.resume(from: dir.path("c.ckpt"))
        #expect(continued.completedEpochs == 2)
    }
}

@Suite struct SASRecIncrementalTests {
    /// A model with random (not trained) weights: parity must hold for any weights.
    func randomModel(maxLength: Int) -> SASRec {
        var c = smallConfig()
        c.maxLength = maxLength
        c.seed = 11
        let model = SASRec(config: c, items: (0..<40).map { "i\($0)" })
        var rng = RandomSource(seed: 5)
        for i in 0..<model.store.count { model.store.values[i] += 0.05 * rng.normal() }
        return model
    }

    @Test func theLastPositionFinalBlockMatchesTheFullPassesLastRows() {
        let model = randomModel(maxLength: 48)
        var rng = RandomSource(seed: 9)
        let histories: [[Int32]] = [1, 5, 33, 48, 60, 0, 2].map { n in (0..<n).map { _ in Int32(rng.below(40)) } }
        let fast = model.lastHidden(histories)
        let d = model.config.width
        for (i, history) in histories.enumerated() {
            let window = Array(model.window(history))
            #expect(fast.present[i] == !window.isEmpty)
            guard !window.isEmpty else {
                #expect(fast.hidden[(i * d)..<((i + 1) * d)].allSatisfy { $0 == 0 })
                continue
            }
            let full = model.hidden(Tape(recording: false, training: false), ids: window, layout: SequenceLayout(lengths: [window.count]))
            for j in 0..<d {
                #expect(abs(fast.hidden[i * d + j] - full.data[(window.count - 1) * d + j]) < 1e-4, "history \(i), column \(j)")
            }
        }
    }

    @Test func incrementalMatchesAFullRecomputeOverLongStreams() {
        let model = randomModel(maxLength: 16)
        let engine = SASRecIncremental(model: model, cacheUsers: 8)
        var rng = RandomSource(seed: 9)
        var sessions = [[Int32]](repeating: [], count: 3)
        var worst: Float = 0
        for _ in 0..<120 {
            // A random user gets 1-3 new events (bursts exercise multi-item catch-up).
            let u = rng.below(3)
            for _ in 0...rng.below(3) { sessions[u].append(Int32(rng.below(40))) }
            let users = ["a", "b", "c"]
            let got = engine.hidden(users: [users[u]], sessions: [sessions[u]])[0]
            // The full recompute of the window the engine holds for this user.
            let window = engineWindow(engine, user: users[u])
            let (full, _) = model.lastHidden([window])
            for j in 0..<full.count { worst = max(worst, abs(full[j] - got[j])) }
            #expect(window.count <= 16)
            #expect(Array(sessions[u].suffix(window.count)) == window)
        }
        #expect(worst < 1e-4, "max |incremental - full| = \(worst)")
        #expect(engine.incrementalSteps > engine.fullPasses, "the cache must do most of the work")
    }

    func engineWindow(_ engine: SASRecIncremental, user: String) -> [Int32] {
        engine.peekWindow(user) ?? []
    }

    @Test func batchedUsersAndTheRecommenderAgreeWithOneAtATime() {
        let model = randomModel(maxLength: 20)
        let ids = { (item: String) -> ItemID in ItemID(Int(item.dropFirst())! + 1) }
        let batched = model.bind(cacheUsers: 16, itemID: ids)
        let single = model.bind(cacheUsers: 16, itemID: ids)
        var rng = RandomSource(seed: 4)
        var sessions: [[ItemID]] = Array(repeating: [], count: 4)
        for _ in 0..<30 {
            for u in 0..<4 { sessions[u].append(ItemID(rng.below(40) + 1)) }
            let requests = (0..<4).map { RecommendationRequest(user: "u\($0)", history: sessions[$0], k: 5, exclude: Set(sessions[$0])) }
            let together = batched.recommend(requests)
            for (u, request) in requests.enumerated() {
                let alone = single.recommend([request])[0]
                #expect(together[u].map(\.item) == alone.map(\.item))
                #expect(zip(together[u], alone).allSatisfy { abs($0.score - $1.score) < 1e-4 })
                #expect(together[u].count == 5 && together[u].allSatisfy { !request.exclude.contains($0.item) })
            }
        }
        // One user twice in a batch (two events in one poll): each answer is the one for the
        // session it was asked for (wave 0: a cold full pass, wave 1: one incremental step).
        let engine = SASRecIncremental(model: model, cacheUsers: 4)
        let s1: [Int32] = [3, 9, 4], s2: [Int32] = [3, 9, 4, 11]
        let twice = engine.hidden(users: ["z", "z"], sessions: [s1, s2])
        let expected = [model.lastHidden([s1]).hidden, model.lastHidden([s2]).hidden]
        for r in 0..<2 { #expect(zip(twice[r], expected[r]).allSatisfy { abs($0 - $1) < 1e-4 }) }
        #expect(engine.peekWindow("z") == s2)

        // Unknown items in a session are skipped, never a crash: such a user is cold (no
        // popularity in this bind, so no answer; with one, the popular items).
        let answer = batched.recommend([RecommendationRequest(user: "x", history: [999, 1000], k: 3, exclude: [])])
        #expect(answer[0].isEmpty)
        let popular = model.bind(cacheUsers: 4, popularity: (0..<40).map { Float($0 % 7) }, itemID: ids)
        #expect(popular.recommend([RecommendationRequest(user: "x", history: [999], k: 3, exclude: [])])[0].map(\.item) == [14, 21, 28], "ties by external id: i13 < i20 < i27")
    }
}
