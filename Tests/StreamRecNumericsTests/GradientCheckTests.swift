// Finite-difference gradient checks: every op's recorded backward against central differences
// of its forward, in float32. Tolerance: |analytic - numeric| <= 2e-3 + 2e-2 * max(|a|, |n|),
// with eps = 1e-2 (float32 round-off makes smaller steps noisier, not more exact).
import Foundation
import Testing
@testable import StreamRecNumerics

/// Random inputs, the op under test, and a fixed random projection of its output to a scalar.
struct GradientCheck {
    var inputs: [Tensor]
    /// Builds the output from the inputs on the given tape.
    var forward: (Tape, [Tensor]) -> Tensor
    var seed: UInt64 = 7

    /// Largest violation of the tolerance over every element of every input (<= 0 passes).
    func worstViolation(eps: Float = 1e-2, atol: Float = 2e-3, rtol: Float = 2e-2) -> Float {
        func loss(recording: Bool) -> (Tape, Tensor) {
            let tape = Tape(recording: recording, training: true, seed: seed)
            let out = forward(tape, inputs)
            var rng = RandomSource(seed: 99)
            let weights = Tensor((0..<out.count).map { _ in rng.normal() }, shape: out.shape)
            return (tape, tape.sum(tape.mul(out, weights)))
        }
        for input in inputs { input.zeroGrad() }
        let (tape, l) = loss(recording: true)
        tape.backward(l)
        var worst: Float = -.infinity
        for input in inputs where input.requiresGrad {
            let analytic = input.gradValues
            for i in 0..<input.count {
                let saved = input.data[i]
                input.data[i] = saved + eps
                let plus = loss(recording: false).1.item
                input.data[i] = saved - eps
                let minus = loss(recording: false).1.item
                input.data[i] = saved
                let numeric = (plus - minus) / (2 * eps)
                let a = analytic.isEmpty ? 0 : analytic[i]
                worst = max(worst, abs(a - numeric) - (atol + rtol * max(abs(a), abs(numeric))))
            }
        }
        return worst
    }
}

func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1, offset: Float = 0, grad: Bool = true) -> Tensor {
    var rng = RandomSource(seed: seed)
    return Tensor((0..<shape.reduce(1, *)).map { _ in offset + scale * rng.normal() }, shape: shape, requiresGrad: grad)
}

@Suite struct GradientCheckTests {
    @Test func gatherAddsIntoTheRowsItRead() {
        let table = randomTensor([5, 3], seed: 1)
        let check = GradientCheck(inputs: [table]) { tape, x in tape.gather(x[0], [4, 0, 4, 2]) }
        #expect(check.worstViolation() <= 0)
    }

    @Test func broadcastRowsSumsEachSequencesPositions() {
        let layout = SequenceLayout(lengths: [3, 1, 4])
        let x = randomTensor([3, 5], seed: 31)
        #expect(GradientCheck(inputs: [x]) { t, x in t.broadcastRows(x[0], layout: layout) }.worstViolation() <= 0)
        let out = Tape(recording: false).broadcastRows(x, layout: layout)
        #expect(out.shape == [8, 5])
        #expect(Array(out.values[15..<20]) == Array(x.values[5..<10]))
        #expect(Array(out.values[20..<25]) == Array(x.values[10..<15]) && Array(out.values[35..<40]) == Array(x.values[10..<15]))
    }

    @Test func addAndMulWithBroadcast() {
        let a = randomTensor([4, 3], seed: 2), b = randomTensor([3], seed: 3)
        #expect(GradientCheck(inputs: [a, b]) { t, x in t.add(x[0], x[1]) }.worstViolation() <= 0)
        #expect(GradientCheck(inputs: [a, b]) { t, x in t.mul(x[0], x[1]) }.worstViolation() <= 0)
        let c = randomTensor([4, 3], seed: 4)
        #expect(GradientCheck(inputs: [a, c]) { t, x in t.mul(x[0], x[1]) }.worstViolation() <= 0)
        #expect(GradientCheck(inputs: [a]) { t, x in t.scale(x[0], -1.7) }.worstViolation() <= 0)
    }

    @Test func activations() {
        // Away from relu's kink at 0: |x| >= 0.1.
        var rng = RandomSource(seed: 5)
        let x = Tensor((0..<12).map { _ in let v = rng.normal(); return v + (v >= 0 ? 0.1 : -0.1) }, shape: [3, 4], requiresGrad: true)
        #expect(GradientCheck(inputs: [x]) { t, x in t.relu(x[0]) }.worstViolation(eps: 1e-3) <= 0)
        #expect(GradientCheck(inputs: [x]) { t, x in t.gelu(x[0]) }.worstViolation() <= 0)
        #expect(GradientCheck(inputs: [x]) { t, x in t.silu(x[0]) }.worstViolation() <= 0)
    }

    @Test func dropoutUsesTheSameMaskForwardAndBack() {
        let x = randomTensor([6, 5], seed: 6)
        #expect(GradientCheck(inputs: [x]) { t, x in t.dropout(x[0], 0.3) }.worstViolation() <= 0)
        // Scaling keeps the expectation: about 70% kept, each scaled by 1/0.7.
        let tape = Tape(seed: 1)
        let ones = Tensor([Float](repeating: 1, count: 10_000), shape: [10_000])
        let dropped = tape.dropout(ones, 0.3)
        let kept = dropped.values.filter { $0 != 0 }
        #expect(abs(Float(kept.count) / 10_000 - 0.7) < 0.02)
        #expect(kept.allSatisfy { abs($0 - 1 / 0.7) < 1e-5 })
        // Not training: the identity.
        let eval = Tape(recording: false, training: false)
        #expect(eval.dropout(ones, 0.3) === ones)
    }

    @Test func reductions() {
        let x = randomTensor([3, 4], seed: 8)
        #expect(GradientCheck(inputs: [x]) { t, x in t.mean(x[0]) }.worstViolation() <= 0)
        #expect(GradientCheck(inputs: [x]) { t, x in t.sum(x[0]) }.worstViolation() <= 0)
    }

    @Test func linearWithAndWithoutBias() {
        let x = randomTensor([7, 5], seed: 9), w = randomTensor([5, 4], seed: 10, scale: 0.5), b = randomTensor([4], seed: 11)
        #expect(GradientCheck(inputs: [x, w, b]) { t, x in t.linear(x[0], x[1], x[2]) }.worstViolation() <= 0)
        #expect(GradientCheck(inputs: [x, w]) { t, x in t.linear(x[0], x[1], nil) }.worstViolation() <= 0)
    }

    @Test func layerNorm() {
        let x = randomTensor([6, 8], seed: 12, scale: 2, offset: 0.5)
        let gamma = randomTensor([8], seed: 13, scale: 0.3, offset: 1), beta = randomTensor([8], seed: 14, scale: 0.3)
        #expect(GradientCheck(inputs: [x, gamma, beta]) { t, x in t.layerNorm(x[0], x[1], x[2]) }.worstViolation() <= 0)
    }

    @Test(arguments: [(heads: 1, causal: true), (heads: 2, causal: true), (heads: 2, causal: false)])
    func selfAttentionOverPackedSequences(heads: Int, causal: Bool) {
        let layout = SequenceLayout(lengths: [3, 1, 5])
        let qkv = randomTensor([layout.total, 3 * 4], seed: 15)
        let check = GradientCheck(inputs: [qkv]) { t, x in t.selfAttention(x[0], layout: layout, heads: heads, causal: causal) }
        #expect(check.worstViolation() <= 0)
    }

    @Test func causalAttentionNeverLooksAhead() {
        // Changing the last position of a sequence must not change any earlier output.
        let layout = SequenceLayout(lengths: [4])
        let qkv = randomTensor([4, 6], seed: 16, grad: false)
        let before = Tape(recording: false).selfAttention(qkv, layout: layout, heads: 1, causal: true).values
        for c in 0..<6 { qkv.data[3 * 6 + c] += 1 }
        let after = Tape(recording: false).selfAttention(qkv, layout: layout, heads: 1, causal: true).values
        // d = 2: rows 0-2 are the first 6 values, row 3 the last 2.
        #expect(Array(before[0..<6]) == Array(after[0..<6]))
        #expect(Array(before[6..<8]) != Array(after[6..<8]))
    }

    @Test func crossAttention() {
        let qLayout = SequenceLayout(lengths: [2, 3]), kvLayout = SequenceLayout(lengths: [4, 1])
        let q = randomTensor([5, 4], seed: 17), kv = randomTensor([5, 8], seed: 18)
        let check = GradientCheck(inputs: [q, kv]) { t, x in t.crossAttention(x[0], x[1], qLayout: qLayout, kvLayout: kvLayout, heads: 2) }
        #expect(check.worstViolation() <= 0)
    }

    @Test func vectorisedGELUMatchesTheErfFormula() {
        // The branch-free erf (A&S 7.1.26) against libm's, over the range activations take.
        let xs = stride(from: Float(-9), through: 9, by: 0.001).map { $0 }
        var out = [Float](repeating: 0, count: xs.count), dx = [Float](repeating: 0, count: xs.count)
        let ones = [Float](repeating: 1, count: xs.count)
        Kernels.geluForward(xs, &out, xs.count)
        Kernels.geluBackward(xs, ones, &dx, xs.count)
        var worst: Float = 0, worstGrad: Float = 0
        for (i, x) in xs.enumerated() {
            let cdf = 0.5 * (1 + erf(Double(x) / 2.0.squareRoot()))
            let pdf = Foundation.exp(-0.5 * Double(x) * Double(x)) / (2 * Double.pi).squareRoot()
            worst = max(worst, abs(out[i] - Float(Double(x) * cdf)))
            worstGrad = max(worstGrad, abs(dx[i] - Float(cdf + Double(x) * pdf)))
        }
        #expect(worst < 2e-6, "GELU max abs error \(worst)")
        #expect(worstGrad < 2e-6, "GELU' max abs error \(worstGrad)")
    }

    @Test func singleQueryAttentionOverGatheredLastRows() {
        // The path DiffuRec's final block takes: queries gathered from qkv itself.
        let layout = SequenceLayout(lengths: [3, 1, 4])
        let qkv = randomTensor([layout.total, 3 * 4], seed: 23)
        let check = GradientCheck(inputs: [qkv]) { t, x in
            t.singleQueryAttention(t.gather(x[0], layout.lastRows), x[0], layout: layout, heads: 2)
        }
        #expect(check.worstViolation() <= 0)
    }

    @Test func singleQueryAttentionEqualsTheLastRowsOfFullAttention() {
        let layout = SequenceLayout(lengths: [3, 1, 4])
        let qkv = randomTensor([layout.total, 3 * 4], seed: 24, grad: false)
        let tape = Tape(recording: false)
        let full = tape.gather(tape.selfAttention(qkv, layout: layout, heads: 2, causal: false), layout.lastRows).values
        let single = tape.singleQueryAttention(tape.gather(qkv, layout.lastRows), qkv, layout: layout, heads: 2).values
        #expect(zip(full, single).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test func softmaxCrossEntropyInBlocks() {
        let h = randomTensor([7, 4], seed: 19), table = randomTensor([9, 4], seed: 20)
        let targets: [Int32] = [3, -1, 0, 8, 8, 2, -1]
        // block 2 < rows: the blocked path and the per-core partial table gradients.
        let check = GradientCheck(inputs: [h, table]) { t, x in t.softmaxCrossEntropy(x[0], table: x[1], targets: targets, block: 2) }
        #expect(check.worstViolation() <= 0)
        // The value equals a direct log-softmax.
        let loss = Tape(recording: false).softmaxCrossEntropy(h, table: table, targets: targets, block: 3).item
        var expected: Double = 0
        for (i, t) in targets.enumerated() where t >= 0 {
            let logits = (0..<9).map { j in (0..<4).reduce(0.0) { $0 + Double(h.data[i * 4 + $1]) * Double(table.data[j * 4 + $1]) } }
            let m = logits.max()!
            expected += m + log(logits.reduce(0) { $0 + exp($1 - m) }) - logits[Int(t)]
        }
        #expect(abs(Double(loss) - expected / 5) < 1e-4)
    }

    @Test func sampledSoftmaxAndBinaryCrossEntropy() {
        let h = randomTensor([5, 4], seed: 21), table = randomTensor([8, 4], seed: 22)
        let targets: [Int32] = [1, 5, -1, 7, 2]
        let negatives: [Int32] = [0, 5, 3]
        #expect(GradientCheck(inputs: [h, table]) { t, x in
            t.sampledSoftmaxCrossEntropy(x[0], table: x[1], targets: targets, negatives: negatives) }.worstViolation() <= 0)
        let rowNegatives: [Int32] = [0, 3, 4, 6, 6]
        #expect(GradientCheck(inputs: [h, table]) { t, x in
            t.binaryCrossEntropy(x[0], table: x[1], positives: targets, negatives: rowNegatives) }.worstViolation() <= 0)
    }

    @Test func aWholeBlockComposes() {
        // embedding -> LN -> qkv -> attention -> residual -> FFN(relu) -> LN -> CE over the table
        let table = randomTensor([6, 4], seed: 23), wqkv = randomTensor([4, 12], seed: 24, scale: 0.4)
        let w1 = randomTensor([4, 4], seed: 25, scale: 0.4), gamma = randomTensor([4], seed: 26, scale: 0.1, offset: 1)
        let beta = randomTensor([4], seed: 27, scale: 0.1)
        let layout = SequenceLayout(lengths: [3, 2])
        let ids: [Int32] = [1, 2, 3, 4, 5], targets: [Int32] = [2, 3, 0, 5, -1]
        let check = GradientCheck(inputs: [table, wqkv, w1, gamma, beta]) { t, p in
            let x = t.scale(t.gather(p[0], ids), 2)
            let a = t.selfAttention(t.linear(t.layerNorm(x, p[3], p[4]), p[1], nil), layout: layout, heads: 2, causal: true)
            let y = t.add(x, a)
            let f = t.add(y, t.gelu(t.linear(y, p[2], nil)))
            return t.softmaxCrossEntropy(t.layerNorm(f, p[3], p[4]), table: p[0], targets: targets, block: 2)
        }
        #expect(check.worstViolation() <= 0)
    }
}

@Suite struct KernelTests {
    @Test func vectorExpMatchesLibm() {
        var xs: [Float] = []
        var x: Float = -80
        while x < 80 { xs.append(x); x += 0.0371 }
        var got = xs
        let sum = got.withUnsafeMutableBufferPointer { Kernels.expShiftSum($0.baseAddress!, $0.count, shift: 1) }
        var worst: Float = 0, expectedSum: Double = 0
        for (i, v) in xs.enumerated() {
            let want = exp(v - 1)
            expectedSum += Double(want)
            worst = max(worst, abs(got[i] - want) / want)
        }
        #expect(worst < 1e-6)
        #expect(abs(Double(sum) - expectedSum) / expectedSum < 1e-5)
        // Below the float range: exactly 0 (a -infinity mask must weigh nothing).
        var tiny: [Float] = [-200, -.infinity]
        _ = tiny.withUnsafeMutableBufferPointer { Kernels.expShiftSum($0.baseAddress!, 2, shift: 0) }
        #expect(tiny == [0, 0])
    }

    @Test func softmaxRowHandlesMasks() {
        var row: [Float] = [1, 2, -.infinity, 3]
        row.withUnsafeMutableBufferPointer { Kernels.softmaxRow($0.baseAddress!, 4) }
        #expect(row[2] == 0)
        #expect(abs(row.reduce(0, +) - 1) < 1e-6)
        var masked: [Float] = [-.infinity, -.infinity]
        masked.withUnsafeMutableBufferPointer { Kernels.softmaxRow($0.baseAddress!, 2) }
        #expect(masked == [0, 0])
    }
}

@Suite struct OptimizerTests {
    @Test func adamFirstStepMovesEachWeightByTheLearningRate() {
        let store = ParameterStore([("w", [3])])
        store.load("w", [1, -2, 3])
        let grads: [Float] = [0.5, -4, 0]
        for i in 0..<3 { store.grads[i] = grads[i] }
        let adam = Adam(store: store, config: AdamConfig(learningRate: 0.1))
        adam.update(lr: 0.1)
        // Bias-corrected first step: m/sqrt(v) = sign(g), so w -= lr * sign(g).
        let w = store.floats("w")
        #expect(abs(w[0] - 0.9) < 1e-5 && abs(w[1] - -1.9) < 1e-5 && w[2] == 3)
        #expect(store.grads[0] == 0)
    }

    @Test func adamWDecaysWeightsWithoutGradient() {
        let store = ParameterStore([("w", [1])])
        store.load("w", [2])
        let adam = Adam(store: store, config: AdamConfig(learningRate: 0.1, weightDecay: 0.5, decoupled: true))
        adam.update(lr: 0.1)
        #expect(abs(store.floats("w")[0] - 1.9) < 1e-6)
    }

    @Test func trainingIsDeterministicForASeed() {
        func run() -> [Float] {
            let store = ParameterStore([("table", [6, 4]), ("w", [4, 4])])
            var rng = RandomSource(seed: 3)
            store.initialize("table", normalStd: 0.5, rng: &rng)
            store.initialize("w", uniform: 0.5, rng: &rng)
            let adam = Adam(store: store, config: AdamConfig())
            for step in 0..<5 {
                let tape = Tape(seed: UInt64(step))
                let h = tape.dropout(tape.linear(tape.gather(store["table"], [1, 2, 3]), store["w"], nil), 0.2)
                tape.backward(tape.softmaxCrossEntropy(h, table: store["table"], targets: [2, 3, 4]))
                adam.update(lr: 1e-2)
            }
            return store.allValues
        }
        #expect(run() == run())
    }

    @Test func clippingAndSchedules() {
        let store = ParameterStore([("w", [2])])
        store.grads[0] = 3; store.grads[1] = 4
        #expect(abs(store.clipGradNorm(1) - 5) < 1e-6)
        #expect(abs(store.gradNorm() - 1) < 1e-6)
        let stepped = LearningRateSchedule.step(base: 1e-3, gamma: 0.1, everyEpochs: 30, stepsPerEpoch: 10)
        #expect(stepped.rate(at: 299) == 1e-3)
        #expect(abs(stepped.rate(at: 300) - 1e-4) < 1e-10)
        let cosine = LearningRateSchedule.cosine(base: 1, warmupSteps: 10, totalSteps: 110, floor: 0)
        #expect(abs(cosine.rate(at: 4) - 0.5) < 1e-6)
        #expect(abs(cosine.rate(at: 60) - 0.5) < 1e-6)
        #expect(cosine.rate(at: 110) < 1e-6)
    }
}
