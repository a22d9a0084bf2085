// Our own data parallelism: contiguous row ranges over the cores, with OpenBLAS pinned to one
// thread so the two never oversubscribe. Measured here: d=64 layer GEMMs run ~20 GFLOP/s on
// OpenBLAS's threads and 35-38 when the rows are split like this.
import Foundation

public enum Parallel {
    /// Worker count: the cores, at most 8, overridable with STREAMREC_THREADS.
    public static let workers: Int = {
        BLAS.useSingleThread()
        if let text = ProcessInfo.processInfo.environment["STREAMREC_THREADS"], let n = Int(text), n >= 1 { return min(n, 64) }
        return max(1, min(8, ProcessInfo.processInfo.activeProcessorCount))
    }()

    /// Runs body(range, worker) over `workers` contiguous chunks of 0..<count. Runs inline when
    /// the work is too small to be worth a thread hand-off (`grain` items per worker at least).
    public static func chunks(_ count: Int, grain: Int = 1, _ body: (Range<Int>, Int) -> Void) {
        guard count > 0 else { return }
        let w = min(workers, max(1, count / max(1, grain)))
        if w == 1 { body(0..<count, 0); return }
        run(parts: w) { i in
            let lo = count * i / w, hi = count * (i + 1) / w
            if lo < hi { body(lo..<hi, i) }
        }
    }

    /// Runs body(i) for each i in 0..<count, items dealt to workers in an interleaved order
    /// (for uneven items such as sequences of different lengths).
    public static func each(_ count: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        let w = min(workers, count)
        if w == 1 { for i in 0..<count { body(i) }; return }
        run(parts: w) { worker in
            var i = worker
            while i < count { body(i); i += w }
        }
    }

    /// The spinning helper threads (WorkerPool.swift); none on one core.
    static let pool: WorkerPool? = workers > 1 ? WorkerPool(helpers: workers - 1) : nil

    /// body(0..<parts) in parallel: on the pool, or, when the pool is running another caller's
    /// job (concurrent or nested use), on Dispatch's threads as before.
    private static func run(parts: Int, _ body: (Int) -> Void) {
        // parts <= workers = helpers + 1 (every caller takes min(workers, ...)).
        if let pool, pool.run(parts: parts, body) { return }
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: parts) { work.value($0) }
        }
    }

    /// C = op(A) op(B) (+ beta C) with the m rows of C split over the cores.
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        // Below ~2 MFLOP a thread hand-off costs more than it saves.
        let grain = max(1, 1_000_000 / max(1, n * k))
        chunks(m, grain: grain) { rows, _ in
            let aRows = transA ? a + rows.lowerBound : a + rows.lowerBound * lda
            BLAS.gemm(transA: transA, transB: transB, m: rows.count, n: n, k: k, alpha: alpha, a: aRows, lda: lda,
                      b: b, ldb: ldb, beta: beta, c: c + rows.lowerBound * ldc, ldc: ldc)
        }
    }
}

/// Hands a closure over raw buffers to the worker threads. Safe here because every caller gives
/// each worker disjoint rows to write, and the call returns only when all workers are done.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
