import ArgumentParser
import Foundation
import StreamRecModels
import StreamRecNumerics

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training and inference speed at the PyTorch peer's shapes.")

    @Option(help: "Which parts: sasrec-train, all.") var only: String = "all"
    @Option(help: "Write the figures as JSON here.") var json: String?

    func run() throws {
        var results: [String: [String: Double]] = [:]
        if only == "all" || only == "sasrec-train" {
            for loss in [SASRecConfig.Loss.crossEntropy, .binary] {
                let (rate, t) = SASRecBenchmark.training(loss: loss)
                print(String(format: "sasrec_train_%@: %.1f seq/s (p50 step %.1f ms)", loss.rawValue, rate, t.p50Ms))
                results["sasrec_train_\(loss.rawValue)"] = ["seq_per_s": rate, "p50_ms": t.p50Ms]
            }
        }
        if only == "ce" {
            let h = Tensor(zeros: [25600, 64], requiresGrad: true), table = Tensor(zeros: [3706, 64], requiresGrad: true)
            var rng = RandomSource(seed: 1)
            for i in 0..<h.count { h.data[i] = rng.normal() * 0.1 }
            for i in 0..<table.count { table.data[i] = rng.normal() * 0.1 }
            let targets = (0..<25600).map { _ in Int32(rng.below(3706)) }
            let t = Timing.measure(5, warmup: 1) {
                let tape = Tape()
                tape.backward(tape.softmaxCrossEntropy(h, table: table, targets: targets))
            }
            print("ce fwd+bwd 25600x3706x64: p50 \(t.p50Ms) ms = \(36.4 / (t.p50Ms / 1000)) GFLOP/s")
            let a = UnsafeMutablePointer<Float>.allocate(capacity: 25600 * 3706)
            let g = Timing.measure(3, warmup: 1) {
                Parallel.gemm(transB: true, m: 25600, n: 3706, k: 64, a: h.data, lda: 64, b: table.data, ldb: 64, c: a, ldc: 3706)
            }
            print("gemm 25600x3706x64 (rows split): p50 \(g.p50Ms) ms = \(12.1 / (g.p50Ms / 1000)) GFLOP/s")
            let e = Timing.measure(3, warmup: 1) {
                Parallel.chunks(25600) { r, _ in for i in r { _ = Kernels.expShiftSum(a + i * 3706, 3706, shift: 1) } }
            }
            print("exp 25600x3706: p50 \(e.p50Ms) ms")
        }
        if let json {
            let data = try JSONSerialization.data(withJSONObject: results, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json))
        }
    }
}
