import ArgumentParser
import Foundation
import Logging
import StreamRecModels
import StreamRecNumerics
import StreamRecService

/// `streamrec bench`: our figures at the PyTorch peer's shapes, and, given the peer's JSON from
/// the same session, the ratios (what docs/benchmarks.md records).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training and inference speed at the PyTorch peer's shapes (make bench runs the peer too).")

    @Option(help: "Parts: all, sasrec-train, sasrec-infer, bert4rec-infer, sasrec-stream (the serving path alone), memory (resident size with 4,096 cached SASRec users; not part of all), diffurec-train, diffurec-infer, diffurec-curve (batch-1 latency at 1/2/4/8/32 steps, 1 and 4 seeds); or swap (model swap latency on the embedded cluster; not part of all), or restore (changelog restore against input replay, for ML-1M with --data and a synthetic stream; not part of all).") var only: String = "all"
    @Option(help: "Fewer sampling steps also measured for diffurec-infer (the peer runs all 32).") var fewSteps: Int = 4
    @Option(help: "Shrink the diffurec shapes (items,width,length,blocks), e.g. 2000,32,50,2, for a quick look.") var diffurecShape: String?
    @Option(help: "swap: the model served and swapped (a catalogue kind: sasrec, transition, bert4rec, ...).") var swapModel: String = "sasrec"
    @Option(help: "swap: paced events per second.") var rate: Int = 1000
    @Option(help: "swap: seconds of paced stream (version 2 is announced halfway).") var seconds: Double = 20
    @Option(help: "restore: a dataset (e.g. ../shared/data/ml-1m) measured besides the synthetic stream.") var data: String?
    @Option(help: "restore: users of the synthetic stream.") var restoreUsers: Int = 1_000_000
    @Option(help: "restore: events per user of the synthetic stream.") var restoreEventsPerUser: Int = 3
    @Option(help: "Write our figures as JSON here.") var json: String?
    @Option(help: "The peer's JSON (pytorch_peer.py --json) from this session: print ratios.") var peer: String?
    @Flag(help: "Fewer repetitions.") var quick = false
    @OptionGroup var common: CommonOptions

    func run() throws {
        let kernels = KernelStartup.establish(logger: common.makeLogger("streamrec.bench"))
        print(kernels.startLine)
        if only == "swap" { return try swap() }
        if only == "restore" { return try restore() }
        var ours: [String: [String: Double]] = [:]
        let runs = quick ? 30 : 200
        if only == "all" || only == "sasrec-train" {
            for loss in [SASRecConfig.Loss.crossEntropy, .binary] {
                let (rate, t) = SASRecBenchmark.training(loss: loss, steps: quick ? 3 : 10)
                ours["sasrec_train_\(loss == .crossEntropy ? "ce" : "bce")"] = ["seq_per_s": rate, "p50_ms": t.p50Ms]
            }
        }
        if only == "memory" {
            // Resident size with 4,096 cached users at the serving window of 50 and at ML-1M's 200.
            for length in [50, 200] {
                let r = SASRecBenchmark.cacheMemory(users: 4096, length: length)
                print(String(format: "SASRec (ML-1M shapes), 4,096 cached users of %d items: resident %.1f MB before, %.1f MB after, %.1f KB per cached user",
                             length, Double(r.before) / 1e6, Double(r.after) / 1e6, r.perUser / 1e3))
                ours["sasrec_cache_memory_\(length)"] = ["resident_mb": Double(r.after) / 1e6, "per_user_kb": r.perUser / 1e3]
            }
        }
        if only == "sasrec-stream" {
            let (eventsPerSecond, batchTiming) = SASRecBenchmark.servingStream()
            ours["sasrec_serve_stream_b100"] = ["events_per_s": eventsPerSecond, "p50_ms": batchTiming.p50Ms, "p99_ms": batchTiming.p99Ms]
        }
        if only == "all" || only == "sasrec-infer" {
            let full = SASRecBenchmark.fullInference(runs: runs)
            ours["sasrec_infer_full_b1"] = ["p50_ms": full.p50Ms, "p99_ms": full.p99Ms]
            let incremental = SASRecBenchmark.incrementalInference(runs: runs)
            ours["sasrec_infer_incremental_b1"] = ["p50_ms": incremental.p50Ms, "p99_ms": incremental.p99Ms]
            let (usersPerSecond, t) = SASRecBenchmark.batchInference(runs: quick ? 5 : 20)
            ours["sasrec_infer_b256"] = ["users_per_s": usersPerSecond, "p50_ms": t.p50Ms]
        }
        if only == "all" || only == "bert4rec-infer" {
            // Beside SASRec's at the same shapes: a full re-run per event (bidirectional: no cache).
            let m = CatalogueBenchmark.bert4rec()
            let one = CatalogueBenchmark.fullInference(m, length: m.config.maxLength - 1, runs: runs)
            ours["bert4rec_infer_b1"] = ["p50_ms": one.p50Ms, "p99_ms": one.p99Ms]
            let (usersPerSecond, t) = CatalogueBenchmark.batchInference(m, length: m.config.maxLength - 1, runs: quick ? 5 : 20)
            ours["bert4rec_infer_b256"] = ["users_per_s": usersPerSecond, "p50_ms": t.p50Ms]
            let (eventsPerSecond, batchTiming) = SASRecBenchmark.servingStream()
            ours["sasrec_serve_stream_b100"] = ["events_per_s": eventsPerSecond, "p50_ms": batchTiming.p50Ms, "p99_ms": batchTiming.p99Ms]
        }
        var diffuShape = (items: 12101, width: 128, length: 100, blocks: 4)
        if let text = diffurecShape {
            let v = text.split(separator: ",").compactMap { Int($0) }
            guard v.count == 4, v.allSatisfy({ $0 > 0 }) else { throw ValidationError("--diffurec-shape wants items,width,length,blocks") }
            diffuShape = (v[0], v[1], v[2], v[3])
        }
        // A shrunken shape is not the peer's: its keys get a suffix so no ratio is printed.
        let suffix = diffurecShape == nil ? "" : "_small"
        let diffu = { DiffuRecBenchmark.model(items: diffuShape.items, width: diffuShape.width, length: diffuShape.length, blocks: diffuShape.blocks) }
        if only == "all" || only == "diffurec-train" {
            let (rate, t) = DiffuRecBenchmark.training(diffu(), steps: quick ? 3 : 10)
            ours["diffurec_train_ce" + suffix] = ["seq_per_s": rate, "p50_ms": t.p50Ms]
        }
        if only == "all" || only == "diffurec-infer" {
            let m = diffu()
            for k in Array(Set([32, fewSteps])).sorted() {
                let one = DiffuRecBenchmark.inference(m, users: 1, sampleSteps: k, runs: quick ? 10 : 50)
                ours["diffurec_infer_b1_\(k)steps" + suffix] = ["p50_ms": one.timing.p50Ms, "p99_ms": one.timing.p99Ms]
                let many = DiffuRecBenchmark.inference(m, users: 256, sampleSteps: k, runs: quick ? 2 : 5)
                ours["diffurec_infer_b256_\(k)steps" + suffix] = ["users_per_s": many.usersPerSecond, "p50_ms": many.timing.p50Ms]
            }
        }
        if only == "diffurec-curve" {
            let m = diffu()
            for seeds in [1, 4] {
                for k in [1, 2, 4, 8, 32] {
                    let one = DiffuRecBenchmark.inference(m, users: 1, sampleSteps: k, seeds: seeds, runs: quick ? 10 : 30)
                    ours["diffurec_infer_b1_\(k)steps" + (seeds > 1 ? "_\(seeds)seeds" : "") + suffix] = ["p50_ms": one.timing.p50Ms, "p99_ms": one.timing.p99Ms]
                }
            }
        }
        var peerFigures: [String: [String: Double]] = [:]
        if let peer {
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: peer))) as? [String: Any] ?? [:]
            for (key, value) in object {
                if let figures = value as? [String: Any] { peerFigures[key] = figures.compactMapValues { ($0 as? NSNumber)?.doubleValue } }
            }
        }
        print("OpenBLAS kernels: \(BLAS.kernelCore) (\(kernels.source.rawValue)); our kernels: \(KernelSet.best.name); workers: \(Parallel.workers)")
        print("figure                          streamrec        peer (torch)     ratio (higher = streamrec better)")
        for key in ours.keys.sorted() {
            let figure = ours[key]!
            let metric = figure["seq_per_s"] != nil ? "seq_per_s" : figure["users_per_s"] != nil ? "users_per_s"
                : figure["events_per_s"] != nil ? "events_per_s" : "p50_ms"
            guard let mine = figure[metric] else { continue }   // e.g. memory figures, printed above
            let unit = ["p50_ms": "ms p50", "seq_per_s": "seq/s", "users_per_s": "users/s", "events_per_s": "events/s"][metric]!
            var line = key.padding(toLength: 32, withPad: " ", startingAt: 0) + String(format: "%10.2f ", mine) + unit.padding(toLength: 8, withPad: " ", startingAt: 0)
            if let theirs = peerFigures[key]?[metric] {
                let ratio = metric == "p50_ms" ? theirs / mine : mine / theirs
                line += String(format: "%10.2f ", theirs) + unit.padding(toLength: 8, withPad: " ", startingAt: 0) + String(format: "%6.2fx", ratio)
            }
            if let p99 = figure["p99_ms"] { line += String(format: "   (p99 %.2f ms)", p99) }
            print(line)
        }
        if let json {
            var out: [String: Any] = ["streamrec": ours, "openblas_kernels": BLAS.kernelCore, "kernel_choice": kernels.startLine,
                                      "native_kernels": KernelSet.best.name, "cpu": CPUInfo.current.brand + " (" + CPUInfo.current.identity + ")"]
            if !peerFigures.isEmpty { out["peer"] = peerFigures }
            let data = try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json))
        }
    }

    /// Steady-state vs swap-window end-to-end latency (docs/benchmarks.md, "Model swap latency").
    private func restore() throws {
        var logger = Logger(label: "streamrec.bench") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .warning
        var results: [RestoreBenchmarkResult] = []
        if let data {
            let dataset = try SequenceDataset.load(path: data)
            results.append(try RestoreBenchmark.run(name: URL(fileURLWithPath: data).lastPathComponent, sequences: dataset.sequences,
                                                    logger: logger) { print($0) })
        }
        let synthetic = (0..<restoreUsers).map { u in
            (user: "user\(u)", items: (0..<restoreEventsPerUser).map { k in "item\((u &* 7919 &+ k &* 104_729) % 50_000)" })
        }
        // 64 partitions keep the mock broker's partition logs under their 100,000-record cap.
        results.append(try RestoreBenchmark.run(name: "synthetic-\(restoreUsers)-users", sequences: synthetic, partitions: 64,
                                                logger: logger) { print($0) })
        print("stream                       events    users  replay s  restore s  speedup  sessions/s   MB/s  changelog MB")
        for r in results {
            print(r.name.padding(toLength: 26, withPad: " ", startingAt: 0)
                  + String(format: "%9d %8d %9.2f %10.2f %7.1fx %11.0f %6.1f %13.1f", r.events, r.users, r.replaySeconds, r.restoreSeconds,
                           r.speedup, r.sessionsPerSecond, r.megabytesPerSecond, Double(r.changelogBytes) / 1e6))
        }
        if let json {
            let out = results.map { r -> [String: Any] in
                ["name": r.name, "events": r.events, "users": r.users, "replay_s": r.replaySeconds, "restore_s": r.restoreSeconds,
                 "speedup": r.speedup, "sessions_per_s": r.sessionsPerSecond, "mb_per_s": r.megabytesPerSecond, "changelog_bytes": r.changelogBytes]
            }
            try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        }
    }

    private func swap() throws {
        var options = SwapBenchmarkOptions()
        options.model = swapModel
        options.rate = rate
        options.seconds = seconds
        options.swapAt = seconds / 2
        var logger = Logger(label: "streamrec.bench") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .warning
        let r = try SwapBenchmark.run(options: options, logger: logger) { print($0) }
        print(String(format: "events %d, answers %d (%@)", r.events, r.answers,
                     r.byVersion.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")))
        print(String(format: "announcement -> new version serving: %.3f s", r.swapSeconds))
        print("window                answers   p50 ms   p99 ms   max ms")
        for (name, w) in [("steady (before swap)", r.steady), ("swap (-1 s .. +4 s)", r.swap)] {
            print(name.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%9d %8.2f %8.2f %8.2f", w.answers, w.p50Ms, w.p99Ms, w.maxMs))
        }
        print(String(format: "swap/steady: p50 %.2fx, p99 %.2fx (goal: p99 within 1.10x)", r.p50Ratio, r.p99Ratio))
        if let json {
            let out: [String: Any] = ["model": r.model, "rate": r.rate, "events": r.events, "answers": r.answers, "swap_seconds": r.swapSeconds,
                                      "steady": ["answers": r.steady.answers, "p50_ms": r.steady.p50Ms, "p99_ms": r.steady.p99Ms, "max_ms": r.steady.maxMs],
                                      "swap": ["answers": r.swap.answers, "p50_ms": r.swap.p50Ms, "p99_ms": r.swap.p99Ms, "max_ms": r.swap.maxMs],
                                      "p99_ratio": r.p99Ratio]
            try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: json))
        }
    }
}
