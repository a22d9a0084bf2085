// The only file that touches OpenBLAS: row-major sgemm/sgemv, the thread setting, and which
// kernels it runs.
// Why single-threaded BLAS: at our layer shapes (d = 64..384) OpenBLAS's own threading gains
// nothing, while splitting rows over the two cores ourselves nearly doubles throughput
// (see Parallel.swift). One place sets it so the two never oversubscribe the cores.
import COpenBLAS
import Foundation

public enum BLAS {
    /// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, all row-major.
    @inline(__always)
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// y[m or n] = alpha * op(A) x + beta * y, A row-major [m, n].
    @inline(__always)
    public static func gemv(trans: Bool = false, m: Int, n: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            x: UnsafePointer<Float>, beta: Float = 0, y: UnsafeMutablePointer<Float>) {
        guard m > 0, n > 0 else { return }
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), alpha, a, Int32(lda), x, 1, beta, y, 1)
    }

    /// dot(x, y) over n contiguous floats.
    @inline(__always)
    public static func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
        cblas_sdot(Int32(n), x, 1, y, 1)
    }

    /// y += alpha * x.
    @inline(__always)
    public static func axpy(_ n: Int, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(Int32(n), alpha, x, 1, y, 1)
    }

    /// Pins OpenBLAS to one thread; our own loops use the cores (called once by Parallel).
    static func useSingleThread() { openblas_set_num_threads(1) }

    /// The kernel set OpenBLAS chose when it loaded: from the CPU (e.g. "Cooperlake" on an
    /// AVX-512 machine) unless OPENBLAS_CORETYPE names one ("Haswell" = AVX2 kernels, about
    /// half the sgemm throughput on AVX-512 cores). Benchmarks print it beside their figures.
    public static var kernelCore: String { String(cString: openblas_get_corename()) }
}

extension BLAS {
    /// The library's build line, e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64".
    public static var libraryConfig: String { String(cString: openblas_get_config()) }
    /// OpenBLAS's own thread count (1: our workers use the cores, see Parallel.swift).
    public static var libraryThreads: Int { Int(openblas_get_num_threads()) }
}


extension BLAS {
    /// The OpenBLAS file this process mapped (which variant: pthread, openmp), from /proc/self/maps.
    public static var libraryPath: String {
        // /proc files report size 0, so read to the end rather than by size.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps") else { return "unknown" }
        defer { try? handle.close() }
        let maps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        for line in maps.split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let path = line[slash...]
            if path.contains("libopenblas") || path.contains("libblas") { return String(path) }
        }
        return "unknown"
    }

    /// The library's identity for cached kernel verdicts: its build line with the running core
    /// blanked out, and its file.
    public static var libraryIdentity: String {
        "\(libraryConfig.replacingOccurrences(of: " \(kernelCore) ", with: " * ")) (\(libraryPath))"
    }
}
