// Pointer-level kernels, forward and backward, shared by the tape ops (Ops.swift) and by
// inference paths that run without a tape (incremental serving, the text encoder).
// Conventions: row-major, `rows` x `dim` unless stated; backward kernels ACCUMULATE into
// gradient buffers (+=), as several consumers may feed one tensor.
import Foundation

public enum Kernels {
    /// The native build for this CPU (Native.swift); ScalarKernels holds the references.
    static let native = KernelSet.best

    // MARK: - exp

    /// In place: x[i] = exp(x[i] - shift); returns the sum. Cody-Waite range reduction and a
    /// degree-6 polynomial (relative error ~2e-7), written as plain scalar code with only
    /// wrapping integer ops so LLVM vectorises it (Swift's generic SIMD conversions and rounding
    /// do not compile to vector instructions); a softmax over 100k logits is not bound by libm.
    @inline(__always)
    public static func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        native.expShiftSum(x, n, shift: shift)
    }

    /// e^raw, vectorisable (see expShiftSum); 0 below e^-87.3, saturating above e^88.3.
    @inline(__always)
    static func exp(_ raw: Float) -> Float {
        var v = raw < -87.3 ? -87.3 : (raw > 88.3 ? 88.3 : raw)
        // n = round(v / ln 2) by the 1.5 * 2^23 trick: an add and a subtract, where
        // `rounded()` would be a libm call on baseline x86-64 and stop vectorisation.
        let fx = (v * 1.442_695_04 + 12_582_912) - 12_582_912
        v = v - fx * 0.693_359_375 + fx * 2.121_944_4e-4
        let z = v * v
        var y: Float = 1.987_569_15e-4
        y = y * v + 1.398_199_950_7e-3
        y = y * v + 8.333_451_907_3e-3
        y = y * v + 4.166_579_589_4e-2
        y = y * v + 1.666_666_545_9e-1
        y = y * v + 5.000_000_120_1e-1
        y = y * z + v + 1
        // 2^fx: fx + 2^23 + 127 holds fx + 127 in its low mantissa bits.
        let biased = (fx + 8_388_735).bitPattern &- 0x4B00_0000
        // Below e^-87.3 the result is 0, so a -infinity mask gives exactly 0.
        return raw < -87.3 ? 0 : y * Float(bitPattern: biased &<< 23)
    }

    // MARK: - GELU

    /// Phi(x) = 0.5 (1 + erf(x / sqrt 2)) and phi(x) = e^(-x^2/2) / sqrt(2 pi), sharing one exp.
    /// erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7, float's own resolution near
    /// 1), branch-free so the loops below vectorise; libm's erff was a fifth of DiffuRec's time.
    @inline(__always)
    static func normalCDFAndPDF(_ x: Float) -> (cdf: Float, pdf: Float) {
        let a = abs(x) * 0.707_106_781_186_547_5
        let t = 1 / (1 + 0.327_591_1 * a)
        var p: Float = 1.061_405_429
        p = p * t - 1.453_152_027
        p = p * t + 1.421_413_741
        p = p * t - 0.284_496_736
        p = p * t + 0.254_829_592
        let g = exp(-0.5 * x * x)
        let erfAbs = 1 - p * t * g
        let erf = x < 0 ? -erfAbs : erfAbs
        return (0.5 * (1 + erf), g * 0.398_942_280_401_432_7)
    }

    /// out[i] = GELU(x[i]) = x Phi(x), the exact (erf) form as BERT and PyTorch's default.
    public static func geluForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        native.geluForward(x, out, n)
    }

    /// dx[i] += dout[i] GELU'(x[i]), GELU' = Phi(x) + x phi(x).
    public static func geluBackward(_ x: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        native.geluBackward(x, dout, dx, n)
    }

    @inline(__always)
    public static func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float { native.maximum(x, n) }

    /// The first index i in 0..<n with x[i] > floor (NaN never is), or n.
    @inline(__always)
    public static func firstAbove(_ x: UnsafePointer<Float>, _ n: Int, _ floor: Float) -> Int { native.firstAbove(x, n, floor) }

    /// Row softmax in place; -infinity entries (masks) become 0.
    @inline(__always)
    public static func softmaxRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) { native.softmaxRow(x, n) }

    // MARK: - layer norm

    /// out = (x - mean) / sqrt(var + eps) * gamma + beta per row; saves mean and 1/std per row.
    public static func layerNormForward(_ x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                        out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>?,
                                        rstd: UnsafeMutablePointer<Float>?, rows: Int, dim: Int, eps: Float) {
        native.layerNormForward(x, gamma: gamma, beta: beta, out: out, mean: mean, rstd: rstd, rows: rows, dim: dim, eps: eps)
    }

    public static func layerNormBackward(dout: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                         rstd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                                         dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                                         dbeta: UnsafeMutablePointer<Float>?, rows: Int, dim: Int) {
        native.layerNormBackward(dout: dout, x: x, mean: mean, rstd: rstd, gamma: gamma, dx: dx, dgamma: dgamma, dbeta: dbeta,
                                 rows: rows, dim: dim)
    }

    // MARK: - activations

    /// GELU of one value (scalar callers); the loops above are the fast path.
    @inline(__always)
    public static func gelu(_ x: Float) -> Float { x * normalCDFAndPDF(x).cdf }

    @inline(__always)
    public static func geluGrad(_ x: Float) -> Float {
        let (cdf, pdf) = normalCDFAndPDF(x)
        return cdf + x * pdf
    }

    @inline(__always)
    public static func silu(_ x: Float) -> Float { x / (1 + Foundation.exp(-x)) }

    @inline(__always)
    public static func siluGrad(_ x: Float) -> Float {
        let s = 1 / (1 + Foundation.exp(-x))
        return s * (1 + x * (1 - s))
    }

    // MARK: - attention

    /// Query rows per block of causal attention: block r's queries see keys up to its last row,
    /// so the masked upper triangle is computed only within a block's own diagonal band (about
    /// half the work of a full lq x lk product at L = 200).
    public static let causalRowBlock = 32

    /// The query blocks of attention over lq queries and lk keys, with how many leading keys each
    /// block sees: one block of every key unless causal; causal blocks of `rowBlock` rows see keys
    /// up to their last row. Forward and backward walk the same blocks.
    static func queryBlocks(lq: Int, lk: Int, causal: Bool, rowBlock: Int) -> [(rows: Range<Int>, visible: Int)] {
        let block = causal ? max(1, rowBlock) : max(1, lq)
        return stride(from: 0, to: lq, by: block).map { i0 in
            let i1 = min(lq, i0 + block)
            return (i0..<i1, causal ? min(lk, max(0, i1 + lk - lq)) : lk)
        }
    }

    /// One head of scaled dot-product attention for one sequence.
    ///   q [lq, dh] (row stride ldq), k and v [lk, dh] (strides ldk, ldv), out [lq, dh] (ldo)
    ///   probs [lq, lk] contiguous: the softmax, kept for backward (masked entries exactly 0)
    /// causal: query i sees keys j <= i + (lk - lq) (queries are the last lq positions).
    /// rowBlock: causal query rows per block (lq = no skipping: the reference the tests compare with).
    public static func attentionForward(q: UnsafePointer<Float>, ldq: Int, k: UnsafePointer<Float>, ldk: Int,
                                        v: UnsafePointer<Float>, ldv: Int, out: UnsafeMutablePointer<Float>, ldo: Int,
                                        probs: UnsafeMutablePointer<Float>, lq: Int, lk: Int, dh: Int, causal: Bool,
                                        rowBlock: Int = causalRowBlock) {
        let scale = 1 / Float(dh).squareRoot()
        let shift = lk - lq
        for (range, visible) in queryBlocks(lq: lq, lk: lk, causal: causal, rowBlock: rowBlock) {
            let i0 = range.lowerBound, i1 = range.upperBound, rows = range.count
            BLAS.gemm(transB: true, m: rows, n: visible, k: dh, alpha: scale, a: q + i0 * ldq, lda: ldq, b: k, ldb: ldk,
                      c: probs + i0 * lk, ldc: lk)
            for i in i0..<i1 {
                let row = probs + i * lk
                if causal {
                    let own = min(visible, max(0, i + shift + 1))
                    if own < visible { (row + own).update(repeating: -.infinity, count: visible - own) }
                }
                softmaxRow(row, visible)
                if visible < lk { (row + visible).update(repeating: 0, count: lk - visible) }
            }
            if visible > 0 {
                BLAS.gemm(m: rows, n: dh, k: visible, a: probs + i0 * lk, lda: lk, b: v, ldb: ldv, c: out + i0 * ldo, ldc: ldo)
            } else {
                for i in i0..<i1 { (out + i * ldo).update(repeating: 0, count: dh) }
            }
        }
    }

    /// Backward of attentionForward (same blocks); accumulates into dq, dk, dv. `scratch` holds
    /// lq*lk floats.
    public static func attentionBackward(dout: UnsafePointer<Float>, lddo: Int, q: UnsafePointer<Float>, ldq: Int,
                                         k: UnsafePointer<Float>, ldk: Int, v: UnsafePointer<Float>, ldv: Int,
                                         probs: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>?, lddq: Int,
                                         dk: UnsafeMutablePointer<Float>?, lddk: Int, dv: UnsafeMutablePointer<Float>?, lddv: Int,
                                         scratch: UnsafeMutablePointer<Float>, lq: Int, lk: Int, dh: Int, causal: Bool = false,
                                         rowBlock: Int = causalRowBlock) {
        let scale = 1 / Float(dh).squareRoot()
        for (range, visible) in queryBlocks(lq: lq, lk: lk, causal: causal, rowBlock: rowBlock) where visible > 0 {
            let i0 = range.lowerBound, rows = range.count
            let p = probs + i0 * lk, ds = scratch + i0 * lk
            // dV += P^T dO
            if let dv { BLAS.gemm(transA: true, m: visible, n: dh, k: rows, a: p, lda: lk, b: dout + i0 * lddo, ldb: lddo, beta: 1, c: dv, ldc: lddv) }
            // dP = dO V^T, then dS = P * (dP - rowsum(P * dP)) * scale
            BLAS.gemm(transB: true, m: rows, n: visible, k: dh, a: dout + i0 * lddo, lda: lddo, b: v, ldb: ldv, c: ds, ldc: lk)
            for i in 0..<rows {
                let pr = p + i * lk, d = ds + i * lk
                var dot: Float = 0
                for j in 0..<visible { dot += pr[j] * d[j] }
                for j in 0..<visible { d[j] = pr[j] * (d[j] - dot) * scale }
            }
            // dQ += dS K, dK += dS^T Q
            if let dq { BLAS.gemm(m: rows, n: dh, k: visible, a: ds, lda: lk, b: k, ldb: ldk, beta: 1, c: dq + i0 * lddq, ldc: lddq) }
            if let dk { BLAS.gemm(transA: true, m: visible, n: dh, k: rows, a: ds, lda: lk, b: q + i0 * ldq, ldb: ldq, beta: 1, c: dk, ldc: lddk) }
        }
    }
}

/// The scalar references every native kernel is tested against (Tests/StreamRecNumericsTests),
/// written as the formulas read. Not on any hot path.
public enum ScalarKernels {
    public static func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        var total: Float = 0
        for i in 0..<n { x[i] = Kernels.exp(x[i] - shift); total += x[i] }
        return total
    }

    public static func geluForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n { out[i] = x[i] * Kernels.normalCDFAndPDF(x[i]).cdf }
    }

    public static func geluBackward(_ x: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n {
            let (cdf, pdf) = Kernels.normalCDFAndPDF(x[i])
            dx[i] += dout[i] * (cdf + x[i] * pdf)
        }
    }

    public static func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m = -Float.infinity
        for i in 0..<n { m = Swift.max(m, x[i]) }
        return m
    }

    public static func firstAbove(_ x: UnsafePointer<Float>, _ n: Int, _ floor: Float) -> Int {
        for i in 0..<n where x[i] > floor { return i }
        return n
    }

    public static func softmaxRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        let m = maximum(x, n)
        guard m > -.infinity else { x.update(repeating: 0, count: n); return }
        let inv = 1 / expShiftSum(x, n, shift: m)
        for i in 0..<n { x[i] *= inv }
    }

    /// out = (x - mean) / sqrt(var + eps) * gamma + beta per row; saves mean and 1/std per row.
    public static func layerNormForward(_ x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                        out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>?,
                                        rstd: UnsafeMutablePointer<Float>?, rows: Int, dim: Int, eps: Float) {
        for r in 0..<rows {
            let xr = x + r * dim, or = out + r * dim
            let m = sum(xr, dim) / Float(dim)
            let s = 1 / (squaredDeviations(xr, from: m, dim) / Float(dim) + eps).squareRoot()
            for i in 0..<dim { or[i] = (xr[i] - m) * s * gamma[i] + beta[i] }
            mean?[r] = m
            rstd?[r] = s
        }
    }

    public static func layerNormBackward(dout: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                         rstd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                                         dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                                         dbeta: UnsafeMutablePointer<Float>?, rows: Int, dim: Int) {
        for r in 0..<rows {
            let xr = x + r * dim, dr = dout + r * dim
            let m = mean[r], s = rstd[r]
            // dnorm = dout * gamma; dx = s * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat))
            var sumD: Float = 0, sumDX: Float = 0
            for i in 0..<dim {
                let xhat = (xr[i] - m) * s
                let dn = dr[i] * gamma[i]
                sumD += dn
                sumDX += dn * xhat
                dgamma?[i] += dr[i] * xhat
                dbeta?[i] += dr[i]
            }
            guard let dx else { continue }
            let meanD = sumD / Float(dim), meanDX = sumDX / Float(dim)
            let dxr = dx + r * dim
            for i in 0..<dim {
                let xhat = (xr[i] - m) * s
                dxr[i] += s * (dr[i] * gamma[i] - meanD - xhat * meanDX)
            }
        }
    }

    /// One Adam(W) step, then g = 0:
    ///   grad = g + l2 w;  m = b1 m + (1-b1) grad;  v = b2 v + (1-b2) grad^2
    ///   w -= decay w;     w -= stepSize m / (sqrt(v / b2t) + eps)
    public static func adamStep(w: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
                                v: UnsafeMutablePointer<Float>, n: Int, beta1: Float, beta2: Float, b2t: Float, stepSize: Float,
                                epsilon: Float, l2: Float, decay: Float) {
        for i in 0..<n {
            let grad = g[i] + l2 * w[i]
            m[i] = beta1 * m[i] + (1 - beta1) * grad
            v[i] = beta2 * v[i] + (1 - beta2) * grad * grad
            w[i] -= decay * w[i]
            w[i] -= stepSize * m[i] / ((v[i] / b2t).squareRoot() + epsilon)
            g[i] = 0
        }
    }

    static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var total: Float = 0
        for i in 0..<n { total += x[i] }
        return total
    }

    static func squaredDeviations(_ x: UnsafePointer<Float>, from mean: Float, _ n: Int) -> Float {
        var total: Float = 0
        for i in 0..<n { let d = x[i] - mean; total += d * d }
        return total
    }
}
