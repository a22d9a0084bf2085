// Every native kernel level this CPU runs (CKernels: AVX-512, AVX2+FMA, baseline) against the
// scalar references in Kernels.swift, at sizes that hit every vector tail.
import Foundation
import Testing
@testable import StreamRecNumerics

private func random(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
    var rng = RandomSource(seed: seed)
    return (0..<n).map { _ in (rng.uniform() * 2 - 1) * scale }
}

/// |a - b| <= atol + rtol |b| everywhere.
private func close(_ a: [Float], _ b: [Float], atol: Float = 1e-6, rtol: Float = 1e-5) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= atol + rtol * abs($1) }
}

private let sizes = [1, 7, 16, 33, 64, 129, 1000]

@Suite struct NativeKernelTests {
    @Test func everyLevelTheCPURunsIsListedAndTheBestIsFirst() {
        #expect(!KernelSet.supported.isEmpty)
        #expect(KernelSet.supported.first?.level == KernelSet.best.level)
        #expect(KernelSet.supported.last?.level == 0)
        let tier = CPUInfo.current.tier
        #expect(KernelSet.best.level == (tier >= .avx512 ? 2 : tier >= .avx2 ? 1 : 0))
    }

    @Test(arguments: KernelSet.supported.map(\.level))
    func layerNormForwardAndBackward(level: Int) {
        let k = KernelSet.supported.first { $0.level == level }!
        for dim in sizes {
            let rows = 3
            let x = random(rows * dim, seed: 1), gamma = random(dim, seed: 2), beta = random(dim, seed: 3), dout = random(rows * dim, seed: 4)
            var out = [Float](repeating: 0, count: rows * dim), mean = [Float](repeating: 0, count: rows), rstd = mean
            var refOut = out, refMean = mean, refRstd = mean
            k.layerNormForward(x, gamma: gamma, beta: beta, out: &out, mean: &mean, rstd: &rstd, rows: rows, dim: dim, eps: 1e-5)
            ScalarKernels.layerNormForward(x, gamma: gamma, beta: beta, out: &refOut, mean: &refMean, rstd: &refRstd, rows: rows, dim: dim, eps: 1e-5)
            #expect(close(out, refOut, atol: 1e-5), "dim \(dim)")
            #expect(close(mean, refMean, atol: 1e-6) && close(rstd, refRstd, rtol: 1e-4), "dim \(dim)")
            // Backward accumulates: start from non-zero gradients.
            var dx = random(rows * dim, seed: 5), dg = random(dim, seed: 6), db = random(dim, seed: 7)
            var refDx = dx, refDg = dg, refDb = db
            k.layerNormBackward(dout: dout, x: x, mean: refMean, rstd: refRstd, gamma: gamma, dx: &dx, dgamma: &dg, dbeta: &db, rows: rows, dim: dim)
            ScalarKernels.layerNormBackward(dout: dout, x: x, mean: refMean, rstd: refRstd, gamma: gamma, dx: &refDx, dgamma: &refDg,
                                            dbeta: &refDb, rows: rows, dim: dim)
            #expect(close(dx, refDx, atol: 1e-4, rtol: 1e-4) && close(dg, refDg, atol: 1e-4, rtol: 1e-4) && close(db, refDb, atol: 1e-5), "dim \(dim)")
        }
    }

    @Test(arguments: KernelSet.supported.map(\.level))
    func geluForwardAndBackward(level: Int) {
        let k = KernelSet.supported.first { $0.level == level }!
        for n in sizes {
            let x = random(n, seed: 11, scale: 6), dout = random(n, seed: 12)
            var out = [Float](repeating: 0, count: n), ref = out
            k.geluForward(x, &out, n)
            ScalarKernels.geluForward(x, &ref, n)
            #expect(close(out, ref), "n \(n)")
            // In place, as the encoder calls it.
            var inPlace = x
            inPlace.withUnsafeMutableBufferPointer { k.geluForward($0.baseAddress!, $0.baseAddress!, n) }
            #expect(close(inPlace, ref), "in place, n \(n)")
            var dx = random(n, seed: 13), refDx = dx
            k.geluBackward(x, dout, &dx, n)
            ScalarKernels.geluBackward(x, dout, &refDx, n)
            #expect(close(dx, refDx), "n \(n)")
        }
    }

    @Test(arguments: KernelSet.supported.map(\.level))
    func softmaxExpAndMax(level: Int) {
        let k = KernelSet.supported.first { $0.level == level }!
        for n in sizes {
            var x = random(n, seed: 21, scale: 40)
            // Masked entries (the causal mask's -infinity) become exactly 0.
            for i in stride(from: 0, to: n, by: 3) where i > 0 { x[i] = -.infinity }
            #expect(k.maximum(x, n) == ScalarKernels.maximum(x, n))
            var row = x, ref = x
            k.softmaxRow(&row, n)
            ScalarKernels.softmaxRow(&ref, n)
            #expect(close(row, ref), "n \(n)")
            #expect(abs(row.reduce(0, +) - 1) < 1e-5)
            for i in stride(from: 3, to: n, by: 3) { #expect(row[i] == 0) }
            var e = random(n, seed: 22, scale: 60), refE = e
            let s = k.expShiftSum(&e, n, shift: 1.5), refS = ScalarKernels.expShiftSum(&refE, n, shift: 1.5)
            #expect(close(e, refE, atol: 0, rtol: 1e-6) && abs(s - refS) <= 1e-5 * abs(refS), "n \(n)")
        }
        var masked = [Float](repeating: -.infinity, count: 9)
        k.softmaxRow(&masked, 9)
        #expect(masked == [Float](repeating: 0, count: 9))
        #expect(k.maximum([], 0) == -.infinity)
    }

    @Test(arguments: KernelSet.supported.map(\.level))
    func firstAboveSkipsOnlyWhatCannotEnter(level: Int) {
        let k = KernelSet.supported.first { $0.level == level }!
        for n in sizes {
            var x = random(n, seed: 51, scale: 1)
            // NaN (at a chunk's first lane too) and -infinity never count as above.
            for i in stride(from: 0, to: n, by: 16) { x[i] = .nan }
            for i in stride(from: 5, to: n, by: 9) { x[i] = -.infinity }
            for floor: Float in [-2, -0.5, 0, 0.5, 0.99, 2] {
                #expect(k.firstAbove(x, n, floor) == ScalarKernels.firstAbove(x, n, floor), "n \(n), floor \(floor)")
            }
        }
    }

    @Test(arguments: KernelSet.supported.map(\.level))
    func adamStepMatchesTheFormula(level: Int) {
        let k = KernelSet.supported.first { $0.level == level }!
        for (l2, decay) in [(Float(0), Float(0)), (0.01, 0), (0, 1e-4)] {
            for n in sizes {
                var w = random(n, seed: 31), g = random(n, seed: 32), m = random(n, seed: 33, scale: 0.1)
                var v = random(n, seed: 34, scale: 0.1).map { $0 * $0 }
                var rw = w, rg = g, rm = m, rv = v
                k.adamStep(w: &w, g: &g, m: &m, v: &v, n: n, beta1: 0.9, beta2: 0.999, b2t: 0.00299, stepSize: 1e-3 / 0.271,
                           epsilon: 1e-8, l2: l2, decay: decay)
                ScalarKernels.adamStep(w: &rw, g: &rg, m: &rm, v: &rv, n: n, beta1: 0.9, beta2: 0.999, b2t: 0.00299,
                                       stepSize: 1e-3 / 0.271, epsilon: 1e-8, l2: l2, decay: decay)
                #expect(close(w, rw) && close(m, rm) && close(v, rv), "n \(n)")
                #expect(g.allSatisfy { $0 == 0 })
            }
        }
    }
}

@Suite struct BlockedAttentionTests {
    /// The causal fast path (query blocks that skip the masked upper triangle) against the full
    /// lq x lk product (rowBlock = lq), forward and backward, with and without a query shift.
    @Test(arguments: [(lq: 100, lk: 100), (lq: 37, lk: 100), (lq: 1, lk: 50), (lq: 64, lk: 64)])
    func causalBlocksMatchTheFullProduct(shape: (lq: Int, lk: Int)) {
        let (lq, lk, dh) = (shape.lq, shape.lk, 16)
        let q = random(lq * dh, seed: 41, scale: 1), k = random(lk * dh, seed: 42, scale: 1), v = random(lk * dh, seed: 43, scale: 1)
        let dout = random(lq * dh, seed: 44, scale: 1)
        func run(_ rowBlock: Int) -> (out: [Float], probs: [Float], dq: [Float], dk: [Float], dv: [Float]) {
            var out = [Float](repeating: 0, count: lq * dh), probs = [Float](repeating: .nan, count: lq * lk)
            var dq = [Float](repeating: 0, count: lq * dh), dk = [Float](repeating: 0, count: lk * dh), dv = dk
            var scratch = [Float](repeating: 0, count: lq * lk)
            Kernels.attentionForward(q: q, ldq: dh, k: k, ldk: dh, v: v, ldv: dh, out: &out, ldo: dh, probs: &probs,
                                     lq: lq, lk: lk, dh: dh, causal: true, rowBlock: rowBlock)
            Kernels.attentionBackward(dout: dout, lddo: dh, q: q, ldq: dh, k: k, ldk: dh, v: v, ldv: dh, probs: probs,
                                      dq: &dq, lddq: dh, dk: &dk, lddk: dh, dv: &dv, lddv: dh, scratch: &scratch,
                                      lq: lq, lk: lk, dh: dh, causal: true, rowBlock: rowBlock)
            return (out, probs, dq, dk, dv)
        }
        let reference = run(lq)
        for rowBlock in [32, 7] {
            let fast = run(rowBlock)
            #expect(close(fast.out, reference.out, atol: 1e-6, rtol: 1e-5), "rowBlock \(rowBlock)")
            #expect(close(fast.probs, reference.probs, atol: 1e-7, rtol: 1e-5), "rowBlock \(rowBlock): masked entries are exactly 0")
            #expect(close(fast.dq, reference.dq, atol: 1e-5, rtol: 1e-4) && close(fast.dk, reference.dk, atol: 1e-5, rtol: 1e-4)
                    && close(fast.dv, reference.dv, atol: 1e-5, rtol: 1e-4), "rowBlock \(rowBlock)")
        }
        // Query i sees key j only when j <= i + lk - lq.
        for i in 0..<lq { for j in 0..<lk where j > i + lk - lq { #expect(reference.probs[i * lk + j] == 0) } }
    }
}
