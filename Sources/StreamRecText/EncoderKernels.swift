import COpenBLAS
import Foundation

/// The low-level kernels of the sentence encoder, on raw row-major Float buffers. Kept in one
/// file, with no knowledge of BERT, so they can be swapped for the project's shared numeric core.
///
/// Conventions: a matrix [R, C] is R rows of C contiguous floats; weights are stored as PyTorch
/// and safetensors store them, [out, in], so `linear` multiplies by their transpose without
/// copying (CblasTrans). Every function is reentrant: callers run them from several threads on
/// disjoint output buffers (OpenBLAS itself is kept single-threaded by the encoder).
enum EncoderKernels {
    /// out[rows, outFeatures] = input[rows, inFeatures] · weight[outFeatures, inFeatures]ᵀ
    ///                          + (accumulate ? out : 0)
    /// Callers preload `out` with the bias (and the residual) and pass accumulate = true, which
    /// fuses the bias and residual adds into the GEMM.
    static func linear(out: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, rows: Int,
                       inFeatures: Int, outFeatures: Int, weight: UnsafePointer<Float>,
                       accumulate: Bool) {
        guard rows > 0 else { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
                    Int32(rows), Int32(outFeatures), Int32(inFeatures),
                    1, input, Int32(inFeatures), weight, Int32(inFeatures),
                    accumulate ? 1 : 0, out, Int32(outFeatures))
    }

    /// Every row of out[rows, cols] = bias[cols].
    static func broadcastRows(out: UnsafeMutablePointer<Float>, rows: Int, bias: UnsafePointer<Float>, cols: Int) {
        for r in 0..<rows {
            (out + r * cols).update(from: bias, count: cols)
        }
    }

    /// out[rows, cols] = residual[rows, cols] + bias[cols] (the start of a fused linear).
    static func residualPlusBias(out: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>,
                                 rows: Int, bias: UnsafePointer<Float>, cols: Int) {
        for r in 0..<rows {
            let o = out + r * cols, x = residual + r * cols
            for c in 0..<cols { o[c] = x[c] + bias[c] }
        }
    }

    /// out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta, row by row (biased variance,
    /// as torch.nn.LayerNorm). `out` may be `x`.
    static func layerNorm(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, cols: Int,
                          gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        let n = Float(cols)
        for r in 0..<rows {
            let xr = x + r * cols, o = out + r * cols
            let mean = sum(xr, count: cols) / n
            let inverse = 1 / (squaredDeviations(xr, from: mean, count: cols) / n + eps).squareRoot()
            for c in 0..<cols { o[c] = (xr[c] - mean) * inverse * gamma[c] + beta[c] }
        }
    }

    // Reductions with eight partial sums: a plain Float loop cannot be vectorised (its order of
    // additions is fixed) and would be latency-bound.

    @inline(__always)
    static func sum(_ a: UnsafePointer<Float>, count n: Int) -> Float {
        var partial = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            partial += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var total = partial.sum()
        while i < n { total += a[i]; i += 1 }
        return total
    }

    @inline(__always)
    static func squaredDeviations(_ a: UnsafePointer<Float>, from mean: Float, count n: Int) -> Float {
        var partial = SIMD8<Float>()
        let m = SIMD8<Float>(repeating: mean)
        var i = 0
        while i + 8 <= n {
            let d = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) - m
            partial += d * d
            i += 8
        }
        var total = partial.sum()
        while i < n { let d = a[i] - mean; total += d * d; i += 1 }
        return total
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
        var partial = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            partial += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
                * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var total = partial.sum()
        while i < n { total += a[i] * b[i]; i += 1 }
        return total
    }

    /// In place: x = x · Φ(x) = 0.5 · x · (1 + erf(x / √2)), BERT's exact ("erf") GELU.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        let inverseSqrt2: Float = 0.70710678118654752
        for i in 0..<count {
            let v = x[i]
            x[i] = 0.5 * v * (1 + erf(v * inverseSqrt2))
        }
    }

    /// erf by Abramowitz & Stegun 7.1.28, |error| ≤ 3e-7, far below the Float32 noise of the
    /// GEMMs around it. Evaluated in Double (the p¹⁶ step would amplify Float rounding to ~1e-6)
    /// and without library calls so `gelu`'s loop vectorises: libm's erff would cost about as
    /// much as the FFN's GEMMs at these shapes.
    @inline(__always)
    static func erf(_ x: Float) -> Float {
        let a1 = 0.0705230784, a2 = 0.0422820123, a3 = 0.0092705272
        let a4 = 0.0001520143, a5 = 0.0002765672, a6 = 0.0000430638
        let t = Double(Swift.abs(x))
        var p = 1 + t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * (a5 + t * a6)))))
        p = p * p; p = p * p; p = p * p; p = p * p  // p^16
        let e = Float(1 - 1 / p)
        return x < 0 ? -e : e
    }

    /// In place: x[0..<count] = softmax(x · scale).
    static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        var maximum = -Float.infinity
        for i in 0..<count { maximum = Swift.max(maximum, x[i]) }
        var sum: Float = 0
        for i in 0..<count {
            let e = Foundation.exp((x[i] - maximum) * scale)
            x[i] = e
            sum += e
        }
        let inverse = 1 / sum
        for i in 0..<count { x[i] *= inverse }
    }

    /// Scaled dot-product self-attention over packed variable-length sequences, no padding.
    ///
    /// qkv[T, 3H]: each row is [q | k | v], each of H = heads · headSize columns, head h in
    /// columns h·headSize ..< (h+1)·headSize. sequences: (first row, length) of each sequence in
    /// the packed rows; a token attends to the tokens of its own sequence only, which is what
    /// BERT's padding mask achieves. out[T, H]: the heads' outputs side by side.
    /// scratch: at least maxLength² floats.
    static func attention(out: UnsafeMutablePointer<Float>, qkv: UnsafePointer<Float>,
                          sequences: [(start: Int, length: Int)], heads: Int, headSize: Int,
                          scratch: UnsafeMutablePointer<Float>) {
        let hidden = heads * headSize
        let stride = 3 * hidden
        let scale = 1 / Float(headSize).squareRoot()
        for (start, length) in sequences {
            for h in 0..<heads {
                let q = qkv + start * stride + h * headSize
                let k = q + hidden
                let v = q + 2 * hidden
                let o = out + start * hidden + h * headSize
                if length >= 32 {
                    // scores[L, L] = q · kᵀ, then softmax rows, then o = scores · v: two GEMMs.
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(length), Int32(length),
                                Int32(headSize), 1, q, Int32(stride), k, Int32(stride), 0, scratch, Int32(length))
                    for i in 0..<length { softmax(scratch + i * length, count: length, scale: scale) }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(length), Int32(headSize),
                                Int32(length), 1, scratch, Int32(length), v, Int32(stride), 0, o, Int32(hidden))
                } else {
                    // Short sequences: plain loops beat the GEMM call overhead.
                    let scores = scratch
                    for i in 0..<length {
                        let qi = q + i * stride
                        for j in 0..<length {
                            scores[j] = dot(qi, k + j * stride, count: headSize)
                        }
                        softmax(scores, count: length, scale: scale)
                        let oi = o + i * hidden
                        for c in 0..<headSize { oi[c] = 0 }
                        for j in 0..<length {
                            let p = scores[j], vj = v + j * stride
                            for c in 0..<headSize { oi[c] += p * vj[c] }
                        }
                    }
                }
            }
        }
    }

    /// out[H] = x[rows, H] averaged over the rows, then scaled to unit L2 norm (norm floored at
    /// 1e-12, as torch.nn.functional.normalize).
    static func meanPoolNormalize(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, rows: Int, cols: Int) {
        for c in 0..<cols { out[c] = 0 }
        for r in 0..<rows {
            let xr = x + r * cols
            for c in 0..<cols { out[c] += xr[c] }
        }
        let inverseRows = 1 / Float(Swift.max(rows, 1))
        var squares: Float = 0
        for c in 0..<cols { out[c] *= inverseRows; squares += out[c] * out[c] }
        let inverseNorm = 1 / Swift.max(squares.squareRoot(), 1e-12)
        for c in 0..<cols { out[c] *= inverseNorm }
    }
}
