import COpenBLAS
import Foundation
import StreamRecNumerics

/// The sentence encoder's own kernels, on raw row-major Float buffers, with no knowledge of
/// BERT: the PyTorch weight layout ([out, in]) and packed variable-length attention. Layer norm,
/// GELU, softmax and the reductions are the numeric core's (`Kernels`), shared with the models.
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
        Kernels.layerNormForward(x, gamma: gamma, beta: beta, out: out, mean: nil, rstd: nil, rows: rows, dim: cols, eps: eps)
    }

    /// In place: x = x · Φ(x), BERT's exact ("erf") GELU.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        Kernels.geluForward(x, x, count)
    }

    /// In place: x[0..<count] = softmax(x · scale).
    static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        for i in 0..<count { x[i] *= scale }
        Kernels.softmaxRow(x, count)
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
                            scores[j] = BLAS.dot(headSize, qi, k + j * stride)
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
