// Speed measurements at the shapes of the PyTorch peer (../shared/peers/pytorch_peer.py), on
// synthetic ids: the numbers `streamrec bench` prints beside the peer's.
import Foundation
import StreamRecNumerics

public struct Timing: Sendable, Codable {
    public var p50Ms: Double
    public var p99Ms: Double
    public var minMs: Double

    public static func measure(_ runs: Int, warmup: Int = 3, _ body: () -> Void) -> Timing {
        for _ in 0..<warmup { body() }
        var times: [Double] = []
        for _ in 0..<max(1, runs) {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        times.sort()
        return Timing(p50Ms: times[times.count / 2], p99Ms: times[min(times.count - 1, Int(Double(times.count) * 0.99))], minMs: times[0])
    }
}

public enum SASRecBenchmark {
    /// ML-1M shapes: 3,706 items, d=64, L=200, 2 blocks, 1 head, batch 128 of full-length sequences.
    public static func model(items: Int = 3706, length: Int = 200, loss: SASRecConfig.Loss = .crossEntropy) -> SASRec {
        var config = SASRecConfig()
        config.maxLength = length
        config.loss = loss
        return SASRec(config: config, items: (0..<items).map { "i\($0)" })
    }

    public static func randomSequences(_ count: Int, length: Int, items: Int, seed: UInt64) -> [[Int32]] {
        var rng = RandomSource(seed: seed)
        return (0..<count).map { _ in (0..<length).map { _ in Int32(rng.below(items)) } }
    }

    /// Training sequences/s (p50 step) with batch `batch` of length L+1 sequences (L inputs).
    public static func training(loss: SASRecConfig.Loss, batch: Int = 128, steps: Int = 10) -> (seqPerSecond: Double, timing: Timing) {
        let m = model(loss: loss)
        let trainer = SASRecTrainer(model: m)
        let data = randomSequences(batch, length: m.config.maxLength + 1, items: m.items.count, seed: 1)
        let t = Timing.measure(steps, warmup: 2) { trainer.step(data, lr: 1e-3) }
        return (Double(batch) / (t.p50Ms / 1000), t)
    }

    /// Batch-1 latency of a full pass over a length-L window, scoring and top-10 included.
    public static func fullInference(runs: Int = 200) -> Timing {
        let m = model()
        return CatalogueBenchmark.fullInference(m, length: m.config.maxLength, runs: runs)
    }

    /// Batch-1 latency of one incremental step: L-1 positions cached, one item arrives; the
    /// one-position pass, scoring and top-10. (The step is undone after each run.)
    public static func incrementalInference(runs: Int = 200) -> Timing {
        let m = model()
        let engine = SASRecIncremental(model: m, cacheUsers: 1)
        let history = randomSequences(1, length: m.config.maxLength, items: m.items.count, seed: 3)[0]
        let state = engine.fullPass([Array(history.dropLast())])[0]
        let d = m.config.width
        var scores = [Float](repeating: 0, count: m.items.count)
        return Timing.measure(runs) {
            engine.step([state], items: [history.last!])
            state.hidden.withUnsafeBufferPointer { h in
                scores.withUnsafeMutableBufferPointer { m.scores(hidden: h.baseAddress!, count: 1, into: $0.baseAddress!) }
            }
            _ = TopK.select(scores, k: 10)
            state.window.removeLast()
            for b in 0..<m.config.blocks {
                state.keys[b].removeLast(d)
                state.values[b].removeLast(d)
            }
        }
    }

    /// Users/s for 256 full-length windows at once (full passes, scoring, top-10 each).
    public static func batchInference(users: Int = 256, runs: Int = 20) -> (usersPerSecond: Double, timing: Timing) {
        let m = model()
        return CatalogueBenchmark.batchInference(m, length: m.config.maxLength, users: users, runs: runs)
    }

    /// The serving path as the pipeline drives it: `users` users, each with `events` events in
    /// random order, answered in micro-batches of `batch` (history excluded, top-10). Returns
    /// events/s and the p50/p99 of one micro-batch's model call.
    public static func servingStream(users: Int = 2000, events: Int = 15, batch: Int = 100, items: Int = 3706) -> (eventsPerSecond: Double, timing: Timing) {
        let m = model(items: items)
        let recommender = m.bind(cacheUsers: 4096) { ItemID(Int($0.dropFirst())! + 1) }
        var rng = RandomSource(seed: 5)
        var order: [Int] = []
        for u in 0..<users { order += Array(repeating: u, count: events) }
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
        var sessions = [[ItemID]](repeating: [], count: users)
        var times: [Double] = []
        let start = DispatchTime.now().uptimeNanoseconds
        var i = 0
        while i < order.count {
            let chunk = order[i..<min(order.count, i + batch)]
            let requests = chunk.map { u -> RecommendationRequest in
                sessions[u].append(ItemID(rng.below(items) + 1))
                return RecommendationRequest(user: "u\(u)", history: sessions[u], k: 10, exclude: Set(sessions[u]))
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = recommender.recommend(requests)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            i += batch
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        times.sort()
        return (Double(order.count) / seconds, Timing(p50Ms: times[times.count / 2], p99Ms: times[min(times.count - 1, times.count * 99 / 100)], minMs: times[0]))
    }
}

extension SASRecBenchmark {
    /// Resident memory of a SASRec recommender (ML-1M shapes) holding `users` cached sessions of
    /// `length` items each (every block's keys and values per position): the process's resident
    /// size before and after, in bytes.
    public static func cacheMemory(users: Int = 4096, length: Int = 50, items: Int = 3706) -> (before: Int, after: Int, perUser: Double) {
        let m = model(items: items)
        let recommender = m.bind(cacheUsers: users) { ItemID(Int($0.dropFirst())! + 1) }
        let before = residentBytes()
        var rng = RandomSource(seed: 6)
        var i = 0
        while i < users {
            let requests = (i..<min(users, i + 256)).map { u in
                RecommendationRequest(user: "u\(u)", history: (0..<length).map { _ in ItemID(rng.below(items) + 1) }, k: 10, exclude: [])
            }
            _ = recommender.recommend(requests)
            i += 256
        }
        let after = residentBytes()
        return (before, after, Double(after - before) / Double(users))
    }

    /// VmRSS of this process (Linux), in bytes; 0 where /proc is not there.
    public static func residentBytes() -> Int {
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/status") else { return 0 }
        defer { try? handle.close() }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }
}

public enum DiffuRecBenchmark {
    /// Beauty shapes as the peer's DiffuApprox: 12,101 items, d=128, L=100, 4 blocks, 4 heads,
    /// T=32 (the baseline variant: the peer has no cross-attention).
    public static func model(items: Int = 12101, width: Int = 128, length: Int = 100, blocks: Int = 4,
                             variant: DiffuRecConfig.Variant = .diffurec) -> DiffuRec {
        var config = DiffuRecConfig()
        config.variant = variant
        config.width = width; config.blocks = blocks; config.maxLength = length
        config.heads = width % 4 == 0 ? 4 : 1
        return DiffuRec(config: config, items: (0..<items).map { "i\($0)" })
    }

    /// Training samples/s (p50 step): `batch` full-length histories, one target each.
    public static func training(_ m: DiffuRec = model(), batch: Int = 256, steps: Int = 10) -> (seqPerSecond: Double, timing: Timing) {
        let trainer = DiffuRecTrainer(model: m)
        let data = SASRecBenchmark.randomSequences(batch, length: m.config.maxLength + 1, items: m.items.count, seed: 1)
        let histories = data.map { $0.dropLast() }, targets = data.map { $0.last! }
        let t = Timing.measure(steps, warmup: 2) { trainer.step(histories: histories, targets: targets, lr: 1e-3) }
        return (Double(batch) / (t.p50Ms / 1000), t)
    }

    /// Latency of scoring `users` full-length histories with K sampling steps (one seed),
    /// scoring and top-10 included; users/s for a batch.
    public static func inference(_ m: DiffuRec = model(), users: Int, sampleSteps: Int, seeds: Int = 1, runs: Int) -> (usersPerSecond: Double, timing: Timing) {
        let histories = SASRecBenchmark.randomSequences(users, length: m.config.maxLength, items: m.items.count, seed: 2)
        let v = m.items.count
        var scores = [Float](repeating: 0, count: users * v)
        let t = Timing.measure(runs, warmup: 1) {
            scores.withUnsafeMutableBufferPointer { buffer in
                m.scoreAll(histories: histories, seeds: (0..<UInt64(seeds)).map { 1 + $0 }, sampleSteps: sampleSteps, into: buffer.baseAddress!)
                Parallel.chunks(users) { range, _ in
                    for u in range { _ = TopK.select(Array(buffer[(u * v)..<((u + 1) * v)]), k: 10) }
                }
            }
        }
        return (Double(users) / (t.p50Ms / 1000), t)
    }
}

/// Serving figures of any catalogue model at the same shapes, so models compare side by side.
public enum CatalogueBenchmark {
    /// Batch-1 latency: one history of `length` items, scored over the catalogue, top-10.
    public static func fullInference(_ m: some CatalogScorer, length: Int, runs: Int) -> Timing {
        let history = SASRecBenchmark.randomSequences(1, length: length, items: m.items.count, seed: 2)
        var scores = [Float](repeating: 0, count: m.items.count)
        return Timing.measure(runs) {
            scores.withUnsafeMutableBufferPointer { m.scoreAll(histories: history, into: $0.baseAddress!) }
            _ = TopK.select(scores, k: 10)
        }
    }

    /// Users/s for `users` histories of `length` items at once (scoring, top-10 each).
    public static func batchInference(_ m: some CatalogScorer, length: Int, users: Int = 256, runs: Int = 20) -> (usersPerSecond: Double, timing: Timing) {
        let histories = SASRecBenchmark.randomSequences(users, length: length, items: m.items.count, seed: 4)
        var scores = [Float](repeating: 0, count: users * m.items.count)
        let v = m.items.count
        let t = Timing.measure(runs, warmup: 1) {
            scores.withUnsafeMutableBufferPointer { buffer in
                m.scoreAll(histories: histories, into: buffer.baseAddress!)
                Parallel.chunks(users) { range, _ in
                    for u in range { _ = TopK.select(Array(buffer[(u * v)..<((u + 1) * v)]), k: 10) }
                }
            }
        }
        return (Double(users) / (t.p50Ms / 1000), t)
    }

    /// BERT4Rec at SASRec's ML-1M shapes (3,706 items, d=64, L=200, 2 blocks; 2 heads, f = 4d).
    public static func bert4rec(items: Int = 3706, length: Int = 200) -> BERT4Rec {
        var c = BERT4RecConfig()
        c.maxLength = length
        return BERT4Rec(config: c, items: (0..<items).map { "i\($0)" })
    }
}
