// Differentiable ops on the tape: exactly what our models need. Each op computes its forward
// result and, when an input needs a gradient, records the step that pushes the output's
// gradient back. Variable-length sequences are PACKED (no padding rows): a SequenceLayout says
// where each one starts, so a batch of short sessions costs what its tokens cost.
import Foundation

/// Where each sequence of a packed batch lives: rows offsets[i] ..< offsets[i] + lengths[i].
public struct SequenceLayout: Sendable, Equatable {
    public let lengths: [Int]
    public let offsets: [Int]
    public let total: Int

    public init(lengths: [Int]) {
        self.lengths = lengths
        var offsets: [Int] = []
        offsets.reserveCapacity(lengths.count)
        var total = 0
        for length in lengths { offsets.append(total); total += length }
        self.offsets = offsets
        self.total = total
    }

    public var count: Int { lengths.count }
    /// Row of each sequence's last position.
    public var lastRows: [Int32] { (0..<count).map { Int32(offsets[$0] + lengths[$0] - 1) } }
}

extension Tape {
    private func output(_ shape: [Int], _ inputs: Tensor...) -> Tensor {
        Tensor(zeros: shape, requiresGrad: recording && inputs.contains { $0.requiresGrad })
    }

    /// An output the op writes in full before returning (not zeroed).
    private func filledOutput(_ shape: [Int], _ inputs: Tensor...) -> Tensor {
        Tensor(uninitialized: shape, requiresGrad: recording && inputs.contains { $0.requiresGrad })
    }

    // MARK: - gather / scatter

    /// out[i] = x[ids[i]] (rows). An embedding lookup when x is a table; backward adds each
    /// row's gradient into only the rows it read (a sparse gradient).
    public func gather(_ x: Tensor, _ ids: [Int32]) -> Tensor {
        let d = x.cols
        let out = filledOutput([ids.count, d], x)
        for (i, id) in ids.enumerated() {
            precondition(id >= 0 && Int(id) < x.rows, "gather: row \(id) outside 0..<\(x.rows)")
            (out.data + i * d).update(from: x.data + Int(id) * d, count: d)
        }
        if out.requiresGrad {
            record {
                let g = out.grad, xg = x.grad
                for (i, id) in ids.enumerated() { BLAS.axpy(d, 1, g + i * d, xg + Int(id) * d) }
            }
        }
        return out
    }

    /// out[T, d]: row r of sequence s is x[s] (x [B, d], B = layout.count). Puts one vector per
    /// sequence (a diffusion state, a step embedding) onto every position of that sequence;
    /// backward sums each sequence's position gradients into its row.
    public func broadcastRows(_ x: Tensor, layout: SequenceLayout) -> Tensor {
        let d = x.cols
        precondition(x.rows == layout.count, "broadcastRows: \(x.rows) rows for \(layout.count) sequences")
        let out = output([layout.total, d], x)
        for s in 0..<layout.count {
            for i in 0..<layout.lengths[s] { (out.data + (layout.offsets[s] + i) * d).update(from: x.data + s * d, count: d) }
        }
        if out.requiresGrad {
            record {
                let g = out.grad, xg = x.grad
                for s in 0..<layout.count {
                    for i in 0..<layout.lengths[s] { BLAS.axpy(d, 1, g + (layout.offsets[s] + i) * d, xg + s * d) }
                }
            }
        }
        return out
    }

    // MARK: - elementwise

    /// a + b, with b broadcast over a's leading axes when b is smaller (b.shape a suffix of a.shape).
    public func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.count % b.count == 0 && Array(a.shape.suffix(b.shape.count)) == b.shape, "add: \(b.shape) does not broadcast to \(a.shape)")
        let out = filledOutput(a.shape, a, b)
        let n = b.count
        for r in 0..<(a.count / n) {
            let o = out.data + r * n, x = a.data + r * n
            for i in 0..<n { o[i] = x[i] + b.data[i] }
        }
        if out.requiresGrad {
            record {
                let g = out.grad
                if a.requiresGrad { BLAS.axpy(a.count, 1, g, a.grad) }
                if b.requiresGrad {
                    let bg = b.grad
                    for r in 0..<(a.count / n) { BLAS.axpy(n, 1, g + r * n, bg) }
                }
            }
        }
        return out
    }

    /// a * b elementwise, b broadcast as in add.
    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.count % b.count == 0 && Array(a.shape.suffix(b.shape.count)) == b.shape, "mul: \(b.shape) does not broadcast to \(a.shape)")
        let out = filledOutput(a.shape, a, b)
        let n = b.count
        for r in 0..<(a.count / n) {
            let o = out.data + r * n, x = a.data + r * n
            for i in 0..<n { o[i] = x[i] * b.data[i] }
        }
        if out.requiresGrad {
            record {
                let g = out.grad
                for r in 0..<(a.count / n) {
                    let gr = g + r * n, x = a.data + r * n
                    if a.requiresGrad { let ag = a.grad + r * n; for i in 0..<n { ag[i] += gr[i] * b.data[i] } }
                    if b.requiresGrad { let bg = b.grad; for i in 0..<n { bg[i] += gr[i] * x[i] } }
                }
            }
        }
        return out
    }

    public func scale(_ x: Tensor, _ s: Float) -> Tensor {
        let out = filledOutput(x.shape, x)
        for i in 0..<x.count { out.data[i] = x.data[i] * s }
        if out.requiresGrad { record { BLAS.axpy(x.count, s, out.grad, x.grad) } }
        return out
    }

    private func pointwise(_ x: Tensor, _ f: (Float) -> Float, _ df: @escaping (Float) -> Float) -> Tensor {
        let out = output(x.shape, x)
        for i in 0..<x.count { out.data[i] = f(x.data[i]) }
        if out.requiresGrad {
            record {
                let g = out.grad, xg = x.grad
                for i in 0..<x.count { xg[i] += g[i] * df(x.data[i]) }
            }
        }
        return out
    }

    public func relu(_ x: Tensor) -> Tensor { pointwise(x, { max($0, 0) }, { $0 > 0 ? 1 : 0 }) }
    public func gelu(_ x: Tensor) -> Tensor {
        let out = filledOutput(x.shape, x), n = x.count
        // Split over the cores in 4k-element chunks (an FFN layer's activations are 10^4-10^6 values).
        let grain = 4096
        Parallel.chunks((n + grain - 1) / grain) { range, _ in
            let start = range.lowerBound * grain, end = min(n, range.upperBound * grain)
            Kernels.geluForward(x.data + start, out.data + start, end - start)
        }
        if out.requiresGrad {
            record {
                let g = out.grad, xg = x.grad
                Parallel.chunks((n + grain - 1) / grain) { range, _ in
                    let start = range.lowerBound * grain, end = min(n, range.upperBound * grain)
                    Kernels.geluBackward(x.data + start, g + start, xg + start, end - start)
                }
            }
        }
        return out
    }
    public func silu(_ x: Tensor) -> Tensor { pointwise(x, Kernels.silu, Kernels.siluGrad) }

    /// Inverted dropout: keeps each element with probability 1 - p, scaled by 1 / (1 - p).
    /// The identity when not training or p == 0.
    public func dropout(_ x: Tensor, _ p: Float) -> Tensor {
        guard training, p > 0 else { return x }
        let keep = 1 - p, s = 1 / keep
        var mask = [Float](repeating: 0, count: x.count)
        for i in 0..<x.count where rng.uniform() < keep { mask[i] = s }
        let out = filledOutput(x.shape, x)
        for i in 0..<x.count { out.data[i] = x.data[i] * mask[i] }
        if out.requiresGrad {
            record {
                let g = out.grad, xg = x.grad
                for i in 0..<x.count { xg[i] += g[i] * mask[i] }
            }
        }
        return out
    }

    // MARK: - reductions

    public func sum(_ x: Tensor) -> Tensor {
        let out = output([1], x)
        var s: Double = 0
        for i in 0..<x.count { s += Double(x.data[i]) }
        out.data[0] = Float(s)
        if out.requiresGrad {
            record {
                let g = out.grad[0], xg = x.grad
                for i in 0..<x.count { xg[i] += g }
            }
        }
        return out
    }

    public func mean(_ x: Tensor) -> Tensor { scale(sum(x), 1 / Float(max(x.count, 1))) }

    // MARK: - layers

    /// y = x W + b; x [n, in], W [in, out], b [out] (optional). Rows split over the cores.
    public func linear(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> Tensor {
        let n = x.rows, inDim = w.shape[0], outDim = w.shape[1]
        precondition(x.cols == inDim, "linear: input width \(x.cols) != weight rows \(inDim)")
        // Filled by the bias rows then the product (beta 1), or by the product alone (beta 0).
        let out = b.map { filledOutput(Array(x.shape.dropLast()) + [outDim], x, w, $0) } ?? filledOutput(Array(x.shape.dropLast()) + [outDim], x, w)
        if let b {
            for r in 0..<n { (out.data + r * outDim).update(from: b.data, count: outDim) }
        }
        if n == 1 {
            // One row (incremental serving): gemv, which OpenBLAS runs faster than a 1-row gemm.
            BLAS.gemv(trans: true, m: inDim, n: outDim, a: w.data, lda: outDim, x: x.data, beta: b == nil ? 0 : 1, y: out.data)
        } else {
            Parallel.gemm(m: n, n: outDim, k: inDim, a: x.data, lda: inDim, b: w.data, ldb: outDim,
                          beta: b == nil ? 0 : 1, c: out.data, ldc: outDim)
        }
        if out.requiresGrad {
            record {
                let g = out.grad
                if x.requiresGrad {
                    Parallel.gemm(transB: true, m: n, n: inDim, k: outDim, a: g, lda: outDim, b: w.data, ldb: outDim,
                                  beta: 1, c: x.grad, ldc: inDim)
                }
                if w.requiresGrad {
                    Parallel.gemm(transA: true, m: inDim, n: outDim, k: n, a: x.data, lda: inDim, b: g, ldb: outDim,
                                  beta: 1, c: w.grad, ldc: outDim)
                }
                if let b, b.requiresGrad {
                    let bg = b.grad
                    for r in 0..<n { BLAS.axpy(outDim, 1, g + r * outDim, bg) }
                }
            }
        }
        return out
    }

    /// Layer norm over the last axis with gain and bias.
    public func layerNorm(_ x: Tensor, _ gamma: Tensor, _ beta: Tensor, eps: Float = 1e-5) -> Tensor {
        let rows = x.rows, dim = x.cols
        let out = filledOutput(x.shape, x, gamma, beta)
        let stats = UnsafeMutablePointer<Float>.allocate(capacity: 2 * rows)
        Parallel.chunks(rows, grain: 256) { range, _ in
            let r0 = range.lowerBound
            Kernels.layerNormForward(x.data + r0 * dim, gamma: gamma.data, beta: beta.data, out: out.data + r0 * dim,
                                     mean: stats + r0, rstd: stats + rows + r0, rows: range.count, dim: dim, eps: eps)
        }
        guard out.requiresGrad else { stats.deallocate(); return out }
        record {
            let workers = Parallel.workers
            let partial = UnsafeMutablePointer<Float>.allocate(capacity: workers * 2 * dim)
            partial.initialize(repeating: 0, count: workers * 2 * dim)
            let dx: UnsafeMutablePointer<Float>? = x.requiresGrad ? x.grad : nil
            let g = out.grad
            Parallel.chunks(rows, grain: 256) { range, worker in
                let r0 = range.lowerBound
                Kernels.layerNormBackward(dout: g + r0 * dim, x: x.data + r0 * dim, mean: stats + r0, rstd: stats + rows + r0,
                                          gamma: gamma.data, dx: dx.map { $0 + r0 * dim },
                                          dgamma: partial + worker * 2 * dim, dbeta: partial + worker * 2 * dim + dim,
                                          rows: range.count, dim: dim)
            }
            for w in 0..<workers {
                if gamma.requiresGrad { BLAS.axpy(dim, 1, partial + w * 2 * dim, gamma.grad) }
                if beta.requiresGrad { BLAS.axpy(dim, 1, partial + w * 2 * dim + dim, beta.grad) }
            }
            partial.deallocate()
            stats.deallocate()
        }
        return out
    }

    /// Multi-head self-attention over a packed batch. qkv [T, 3d] holds Q | K | V per row
    /// (one fused projection); out [T, d]. causal: a position sees itself and earlier ones;
    /// otherwise every position of its own sequence (sequences never see each other).
    public func selfAttention(_ qkv: Tensor, layout: SequenceLayout, heads: Int, causal: Bool) -> Tensor {
        let d = qkv.cols / 3
        precondition(qkv.cols == 3 * d && qkv.rows == layout.total && d % heads == 0, "selfAttention: shape \(qkv.shape)")
        return attentionCore(q: qkv.data, ldq: 3 * d, k: qkv.data + d, v: qkv.data + 2 * d, ldkv: 3 * d, d: d,
                             qLayout: layout, kLayout: layout, heads: heads, causal: causal, inputs: [qkv],
                             grads: { (qkv.grad, 3 * d, qkv.grad + d, qkv.grad + 2 * d, 3 * d) })
    }

    /// Incremental decoding: row i of qkv [B, 3d] is one new position of sequence i (only its Q
    /// is read), attending over that sequence's cached keys and values [n_i, d] each, which
    /// already hold the new position (`cache(i, body)` hands them to `body`); out [B, d]. The
    /// same kernel as selfAttention, so a cached step equals the full pass's last row. Forward
    /// only: serving never trains through a cache.
    public func cachedAttention(_ qkv: Tensor, heads: Int,
                                cache: (Int, (_ keys: UnsafePointer<Float>, _ values: UnsafePointer<Float>, _ count: Int) -> Void) -> Void) -> Tensor {
        let d = qkv.cols / 3, dh = d / heads
        precondition(qkv.cols == 3 * d && d % heads == 0 && !(recording && qkv.requiresGrad), "cachedAttention: shape \(qkv.shape), forward only")
        let out = filledOutput([qkv.rows, d], qkv)
        for i in 0..<qkv.rows {
            cache(i) { keys, values, count in
                let probs = TensorPool.allocate(max(1, count))
                defer { TensorPool.deallocate(probs, count: max(1, count)) }
                for h in 0..<heads {
                    Kernels.attentionForward(q: qkv.data + i * 3 * d + h * dh, ldq: 3 * d, k: keys + h * dh, ldk: d, v: values + h * dh, ldv: d,
                                             out: out.data + i * d + h * dh, ldo: d, probs: probs, lq: 1, lk: count, dh: dh, causal: false)
                }
            }
        }
        return out
    }

    /// Multi-head cross-attention: queries q [Tq, d] from one packed batch attend to kv [Tk, 2d]
    /// (K | V) of another with the same number of sequences; sequence i attends only to i.
    public func crossAttention(_ q: Tensor, _ kv: Tensor, qLayout: SequenceLayout, kvLayout: SequenceLayout, heads: Int) -> Tensor {
        let d = q.cols
        precondition(kv.cols == 2 * d && qLayout.count == kvLayout.count && d % heads == 0, "crossAttention: shapes \(q.shape) \(kv.shape)")
        precondition(q.rows == qLayout.total && kv.rows == kvLayout.total, "crossAttention: layouts do not match the tensors")
        return attentionCore(q: q.data, ldq: d, k: kv.data, v: kv.data + d, ldkv: 2 * d, d: d, qLayout: qLayout, kLayout: kvLayout,
                             heads: heads, causal: false, inputs: [q, kv],
                             grads: { (q.requiresGrad ? q.grad : nil, d, kv.requiresGrad ? kv.grad : nil, kv.requiresGrad ? kv.grad + d : nil, 2 * d) })
    }

    /// Bidirectional attention of one query per sequence over every position of that sequence:
    /// `queries` [B, 3d] holds Q | K | V rows (only Q is read; e.g. `gather(qkv, layout.lastRows)`),
    /// qkv [T, 3d] supplies K | V; out [B, d]. For models that read only one position of their
    /// final block (DiffuRec's x0_hat), this skips the other positions' queries, output
    /// projection and FFN.
    public func singleQueryAttention(_ queries: Tensor, _ qkv: Tensor, layout: SequenceLayout, heads: Int) -> Tensor {
        let d = qkv.cols / 3
        precondition(qkv.cols == 3 * d && queries.cols == 3 * d && d % heads == 0, "singleQueryAttention: shapes \(queries.shape) \(qkv.shape)")
        precondition(qkv.rows == layout.total && queries.rows == layout.count, "singleQueryAttention: layout does not match the tensors")
        let qLayout = SequenceLayout(lengths: [Int](repeating: 1, count: layout.count))
        return attentionCore(q: queries.data, ldq: 3 * d, k: qkv.data + d, v: qkv.data + 2 * d, ldkv: 3 * d, d: d,
                             qLayout: qLayout, kLayout: layout, heads: heads, causal: false, inputs: [queries, qkv],
                             grads: { (queries.requiresGrad ? queries.grad : nil, 3 * d, qkv.requiresGrad ? qkv.grad + d : nil,
                                       qkv.requiresGrad ? qkv.grad + 2 * d : nil, 3 * d) })
    }

    private func attentionCore(q: UnsafeMutablePointer<Float>, ldq: Int, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                               ldkv: Int, d: Int, qLayout: SequenceLayout, kLayout: SequenceLayout, heads: Int, causal: Bool,
                               inputs: [Tensor],
                               grads: @escaping () -> (dq: UnsafeMutablePointer<Float>?, lddq: Int, dk: UnsafeMutablePointer<Float>?,
                                                       dv: UnsafeMutablePointer<Float>?, lddkv: Int)) -> Tensor {
        let dh = d / heads
        let needsGrad = recording && inputs.contains { $0.requiresGrad }
        let out = Tensor(zeros: [qLayout.total, d], requiresGrad: needsGrad)
        // probs for every (sequence, head): lq * lk floats each, kept for backward.
        var probOffsets = [Int](repeating: 0, count: qLayout.count * heads + 1)
        for s in 0..<qLayout.count {
            for h in 0..<heads { probOffsets[s * heads + h + 1] = probOffsets[s * heads + h] + qLayout.lengths[s] * kLayout.lengths[s] }
        }
        let probsCount = max(1, probOffsets.last!)
        let probs = TensorPool.allocate(probsCount)
        let outData = out.data
        Parallel.each(qLayout.count * heads) { job in
            let s = job / heads, h = job % heads
            let lq = qLayout.lengths[s], lk = kLayout.lengths[s]
            guard lq > 0, lk > 0 else { return }
            let qo = qLayout.offsets[s], ko = kLayout.offsets[s]
            Kernels.attentionForward(q: q + qo * ldq + h * dh, ldq: ldq, k: k + ko * ldkv + h * dh, ldk: ldkv,
                                     v: v + ko * ldkv + h * dh, ldv: ldkv, out: outData + qo * d + h * dh, ldo: d,
                                     probs: probs + probOffsets[job], lq: lq, lk: lk, dh: dh, causal: causal)
        }
        guard needsGrad else { TensorPool.deallocate(probs, count: probsCount); return out }
        record {
            let (dq, ldgq, dk, dv, ldg) = grads()
            let g = out.grad
            // Each (sequence, head) writes disjoint rows/columns of dq, dk, dv: safe in parallel.
            let maxProduct = (0..<qLayout.count).map { qLayout.lengths[$0] * kLayout.lengths[$0] }.max() ?? 0
            let scratchCount = max(1, maxProduct) * Parallel.workers
            let scratch = TensorPool.allocate(scratchCount)
            Parallel.chunks(qLayout.count * heads) { jobs, worker in
                for job in jobs {
                    let s = job / heads, h = job % heads
                    let lq = qLayout.lengths[s], lk = kLayout.lengths[s]
                    guard lq > 0, lk > 0 else { continue }
                    let qo = qLayout.offsets[s], ko = kLayout.offsets[s]
                    Kernels.attentionBackward(dout: g + qo * d + h * dh, lddo: d, q: q + qo * ldq + h * dh, ldq: ldq,
                                              k: k + ko * ldkv + h * dh, ldk: ldkv, v: v + ko * ldkv + h * dh, ldv: ldkv,
                                              probs: probs + probOffsets[job],
                                              dq: dq.map { $0 + qo * ldgq + h * dh }, lddq: ldgq,
                                              dk: dk.map { $0 + ko * ldg + h * dh }, lddk: ldg,
                                              dv: dv.map { $0 + ko * ldg + h * dh }, lddv: ldg,
                                              scratch: scratch + worker * max(1, maxProduct), lq: lq, lk: lk, dh: dh, causal: causal)
                }
            }
            TensorPool.deallocate(scratch, count: scratchCount)
            TensorPool.deallocate(probs, count: probsCount)
        }
        return out
    }

    // MARK: - losses over the item table

    /// Mean softmax cross-entropy of logits = h table^T against targets, fused with the logits
    /// product and computed in row blocks, so at most `block` x V logits exist at once per core.
    /// h [n, d], table [V, d], targets[i] in 0..<V, or -1 to skip row i. The gradients are
    /// computed during the forward pass (the loss is always the last node) and applied, scaled
    /// by the upstream gradient, by backward.
    public func softmaxCrossEntropy(_ h: Tensor, table: Tensor, targets: [Int32], block: Int = Tape.crossEntropyBlock) -> Tensor {
        let n = h.rows, d = h.cols, vocab = table.rows
        precondition(targets.count == n && table.cols == d, "softmaxCrossEntropy: shapes \(h.shape) \(table.shape) targets \(targets.count)")
        let counted = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        let out = output([1], h, table)
        guard counted > 0 else { return out }
        let needsGrad = out.requiresGrad
        let norm = 1 / Float(counted)
        let workers = Parallel.workers
        let dh: UnsafeMutablePointer<Float>? = needsGrad && h.requiresGrad ? TensorPool.allocate(n * d) : nil
        let dTable: UnsafeMutablePointer<Float>? = needsGrad && table.requiresGrad ? TensorPool.allocate(workers * vocab * d) : nil
        dTable?.initialize(repeating: 0, count: workers * vocab * d)
        let logitsAll = TensorPool.allocate(workers * block * vocab)
        var losses = [Double](repeating: 0, count: workers)
        let blocks = (n + block - 1) / block
        losses.withUnsafeMutableBufferPointer { lossBuffer in
            let lossPtr = lossBuffer.baseAddress!
            Parallel.chunks(blocks) { range, worker in
                let logits = logitsAll + worker * block * vocab
                for b in range {
                    let r0 = b * block, rows = min(block, n - r0)
                    BLAS.gemm(transB: true, m: rows, n: vocab, k: d, a: h.data + r0 * d, lda: d, b: table.data, ldb: d, c: logits, ldc: vocab)
                    var loss: Double = 0
                    for i in 0..<rows {
                        let row = logits + i * vocab
                        let target = Int(targets[r0 + i])
                        guard target >= 0 else { row.update(repeating: 0, count: vocab); continue }
                        let targetLogit = row[target]
                        let m = Kernels.maximum(row, vocab)
                        let total = Kernels.expShiftSum(row, vocab, shift: m)
                        loss += Double(m + Foundation.log(total) - targetLogit)
                        // row becomes d loss / d logits = (softmax - onehot) / counted
                        let s = norm / total
                        for j in 0..<vocab { row[j] *= s }
                        row[target] -= norm
                    }
                    lossPtr[worker] += loss
                    if let dh {
                        BLAS.gemm(m: rows, n: d, k: vocab, a: logits, lda: vocab, b: table.data, ldb: d, c: dh + r0 * d, ldc: d)
                    }
                    if let dTable {
                        BLAS.gemm(transA: true, m: vocab, n: d, k: rows, a: logits, lda: vocab, b: h.data + r0 * d, ldb: d,
                                  beta: 1, c: dTable + worker * vocab * d, ldc: d)
                    }
                }
            }
        }
        TensorPool.deallocate(logitsAll, count: workers * block * vocab)
        out.data[0] = Float(losses.reduce(0, +) / Double(counted))
        guard needsGrad else {
            if let dh { TensorPool.deallocate(dh, count: n * d) }
            if let dTable { TensorPool.deallocate(dTable, count: workers * vocab * d) }
            return out
        }
        record {
            let g = out.grad[0]
            if let dh { BLAS.axpy(n * d, g, dh, h.grad); TensorPool.deallocate(dh, count: n * d) }
            if let dTable {
                for w in 0..<workers { BLAS.axpy(vocab * d, g, dTable + w * vocab * d, table.grad) }
                TensorPool.deallocate(dTable, count: workers * vocab * d)
            }
        }
        return out
    }

    /// Mean sampled-softmax cross-entropy: each row's target competes with `negatives` (shared
    /// by the batch) instead of the whole table. A negative equal to the row's target is masked.
    public func sampledSoftmaxCrossEntropy(_ h: Tensor, table: Tensor, targets: [Int32], negatives: [Int32]) -> Tensor {
        let n = h.rows, d = h.cols, m = negatives.count + 1
        let counted = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        let out = output([1], h, table)
        guard counted > 0 else { return out }
        let norm = 1 / Float(counted)
        // The negatives' rows, gathered once; backward needs them too, so it owns the buffer then.
        let negTable = UnsafeMutablePointer<Float>.allocate(capacity: max(1, negatives.count * d))
        for (j, id) in negatives.enumerated() { (negTable + j * d).update(from: table.data + Int(id) * d, count: d) }
        // logits [n, m]: column 0 the target, then the negatives.
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: n * m)
        defer { logits.deallocate() }
        BLAS.gemm(transB: true, m: n, n: m - 1, k: d, a: h.data, lda: d, b: negTable, ldb: d, c: logits + 1, ldc: m)
        var loss: Double = 0
        for i in 0..<n {
            let row = logits + i * m
            let t = Int(targets[i])
            guard t >= 0 else { row.update(repeating: 0, count: m); continue }
            row[0] = BLAS.dot(d, h.data + i * d, table.data + t * d)
            for j in 0..<(m - 1) where Int(negatives[j]) == t { row[j + 1] = -.infinity }
            let mx = Kernels.maximum(row, m)
            var total: Float = 0
            for j in 0..<m { let e = row[j] == -.infinity ? 0 : Foundation.exp(row[j] - mx); row[j] = e; total += e }
            loss += Double(mx + Foundation.log(total) - (row[0] == 0 ? -.infinity : Foundation.log(row[0]) + mx))
            for j in 0..<m { row[j] *= norm / total }
            row[0] -= norm
        }
        out.data[0] = Float(loss / Double(counted))
        guard out.requiresGrad else { negTable.deallocate(); return out }
        let grads = Array(UnsafeBufferPointer(start: logits, count: n * m))
        record {
            defer { negTable.deallocate() }
            let g = out.grad[0]
            grads.withUnsafeBufferPointer { gl in
                let gl = gl.baseAddress!
                for i in 0..<n {
                    let t = Int(targets[i])
                    guard t >= 0 else { continue }
                    let c0 = gl[i * m] * g
                    if h.requiresGrad { BLAS.axpy(d, c0, table.data + t * d, h.grad + i * d) }
                    if table.requiresGrad { BLAS.axpy(d, c0, h.data + i * d, table.grad + t * d) }
                }
                // negatives: dh += G[:,1:] negTable; dNeg = G[:,1:]^T h
                if h.requiresGrad {
                    BLAS.gemm(m: n, n: d, k: m - 1, alpha: g, a: gl + 1, lda: m, b: negTable, ldb: d, beta: 1, c: h.grad, ldc: d)
                }
                if table.requiresGrad {
                    let dNeg = UnsafeMutablePointer<Float>.allocate(capacity: max(1, (m - 1) * d))
                    BLAS.gemm(transA: true, m: m - 1, n: d, k: n, alpha: g, a: gl + 1, lda: m, b: h.data, ldb: d, c: dNeg, ldc: d)
                    for (j, id) in negatives.enumerated() { BLAS.axpy(d, 1, dNeg + j * d, table.grad + Int(id) * d) }
                    dNeg.deallocate()
                }
            }
        }
        return out
    }

    /// SASRec's original loss: per row, binary cross-entropy of the target (label 1) and one
    /// negative (label 0), scored by dot product with the table; mean over counted rows.
    public func binaryCrossEntropy(_ h: Tensor, table: Tensor, positives: [Int32], negatives: [Int32]) -> Tensor {
        let n = h.rows, d = h.cols
        let counted = positives.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        let out = output([1], h, table)
        guard counted > 0 else { return out }
        let norm = 1 / Float(counted)
        var coefficients = [Float](repeating: 0, count: 2 * n)
        var loss: Double = 0
        func softplus(_ x: Float) -> Float { x > 0 ? x + Foundation.log1p(Foundation.exp(-x)) : Foundation.log1p(Foundation.exp(x)) }
        for i in 0..<n {
            let p = Int(positives[i]), q = Int(negatives[i])
            guard p >= 0 else { continue }
            let sp = BLAS.dot(d, h.data + i * d, table.data + p * d)
            let sn = BLAS.dot(d, h.data + i * d, table.data + q * d)
            loss += Double(softplus(-sp) + softplus(sn))
            coefficients[2 * i] = (1 / (1 + Foundation.exp(-sp)) - 1) * norm
            coefficients[2 * i + 1] = 1 / (1 + Foundation.exp(-sn)) * norm
        }
        out.data[0] = Float(loss / Double(counted))
        if out.requiresGrad {
            record {
                let g = out.grad[0]
                for i in 0..<n {
                    let p = Int(positives[i]), q = Int(negatives[i])
                    guard p >= 0 else { continue }
                    let cp = coefficients[2 * i] * g, cn = coefficients[2 * i + 1] * g
                    if h.requiresGrad {
                        BLAS.axpy(d, cp, table.data + p * d, h.grad + i * d)
                        BLAS.axpy(d, cn, table.data + q * d, h.grad + i * d)
                    }
                    if table.requiresGrad {
                        BLAS.axpy(d, cp, h.data + i * d, table.grad + p * d)
                        BLAS.axpy(d, cn, h.data + i * d, table.grad + q * d)
                    }
                }
            }
        }
        return out
    }
}

extension Tape {
    /// Rows per logits block in softmaxCrossEntropy. Measured at ML-1M shapes (V = 3,706, d = 64):
    /// 64 rows 136 seq/s, 128 rows 206, 256 rows 197 (the dTable product needs a deep k).
    public static let crossEntropyBlock = 128
}
