// The only file that touches our own C target (CKernels): what the CPU can do, read by cpuid,
// and the elementwise kernel table built for that CPU's instruction sets.
import CKernels

/// The CPU this process runs on, as cpuid and the OS's saved-register mask (XCR0) report it.
public struct CPUInfo: Sendable, Equatable, Codable {
    public var vendor: String
    public var brand: String
    public var family: Int
    public var model: Int
    public var stepping: Int
    /// Usable instruction-set extensions, lower-case as Linux's /proc/cpuinfo names them.
    public var features: Set<String>

    public init(vendor: String, brand: String, family: Int, model: Int, stepping: Int, features: Set<String>) {
        self.vendor = vendor
        self.brand = brand
        self.family = family
        self.model = model
        self.stepping = stepping
        self.features = features
    }

    /// The CPU at hand.
    public static let current: CPUInfo = {
        var raw = sr_cpu_info()
        sr_cpu_read(&raw)
        let vendor = withUnsafeBytes(of: raw.vendor) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let brand = withUnsafeBytes(of: raw.brand) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var features: Set<String> = []
        for (bit, name) in featureNames where Int(raw.features) & bit != 0 { features.insert(name) }
        return CPUInfo(vendor: vendor, brand: brand, family: Int(raw.family), model: Int(raw.model),
                       stepping: Int(raw.stepping), features: features)
    }()

    private static let featureNames: [(Int, String)] = [
        (SR_CPU_SSE3, "sse3"), (SR_CPU_SSSE3, "ssse3"), (SR_CPU_SSE41, "sse4_1"),
        (SR_CPU_SSE42, "sse4_2"), (SR_CPU_AVX, "avx"), (SR_CPU_AVX2, "avx2"),
        (SR_CPU_FMA, "fma"), (SR_CPU_F16C, "f16c"), (SR_CPU_AVX512F, "avx512f"),
        (SR_CPU_AVX512CD, "avx512cd"), (SR_CPU_AVX512BW, "avx512bw"),
        (SR_CPU_AVX512DQ, "avx512dq"), (SR_CPU_AVX512VL, "avx512vl"),
        (SR_CPU_AVX512BF16, "avx512_bf16"), (SR_CPU_AVX512FP16, "avx512_fp16"),
        (SR_CPU_AVX512VNNI, "avx512_vnni"), (SR_CPU_AMXTILE, "amx_tile"),
        (SR_CPU_AMXBF16, "amx_bf16"),
    ]

    /// The widest vector tier both CPU and OS support.
    public var tier: VectorTier {
        if features.isSuperset(of: ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) { return .avx512 }
        if features.isSuperset(of: ["avx2", "fma"]) { return .avx2 }
        if features.contains("avx") { return .avx }
        if features.contains("sse3") { return .sse3 }
        return .baseline
    }

    /// Identifies the CPU for cached verdicts: the same model and stepping with the same usable
    /// features behaves the same (a VM that hides AVX-512 gets another key).
    public var identity: String {
        "\(vendor) family \(family) model \(model) stepping \(stepping) [\(features.sorted().joined(separator: ","))]"
    }
}

/// Vector instruction tiers, ordered: a tier runs everything below it.
public enum VectorTier: Int, Sendable, Comparable, Codable, CustomStringConvertible {
    case unknown = 0, baseline, sse3, avx, avx2, avx512
    public static func < (a: VectorTier, b: VectorTier) -> Bool { a.rawValue < b.rawValue }
    public var description: String {
        switch self {
        case .unknown: "unknown"
        case .baseline: "SSE2"
        case .sse3: "SSE3"
        case .avx: "AVX"
        case .avx2: "AVX2"
        case .avx512: "AVX-512"
        }
    }
}

/// One build of the elementwise kernels (CKernels/kernels_body.h), for one ISA level. Kernels.swift
/// calls `KernelSet.best`; the tests run every level the CPU supports against ScalarKernels.
public struct KernelSet: @unchecked Sendable {
    private let table: sr_kernel_table
    /// 0 = baseline x86-64, 1 = AVX2+FMA, 2 = AVX-512.
    public var level: Int { Int(table.level) }
    public var name: String { String(cString: table.name) }

    private init(_ table: sr_kernel_table) { self.table = table }

    /// The widest level this CPU runs, chosen once.
    public static let best = KernelSet(sr_kernels().pointee)
    /// Every level this CPU runs, widest first.
    public static let supported: [KernelSet] = (0...2).reversed().compactMap { sr_kernels_level(Int32($0)).map { KernelSet($0.pointee) } }

    @inline(__always)
    public func layerNormForward(_ x: UnsafePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                 out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>?,
                                 rstd: UnsafeMutablePointer<Float>?, rows: Int, dim: Int, eps: Float) {
        table.layer_norm_forward(x, gamma, beta, out, mean, rstd, Int64(rows), Int64(dim), eps)
    }

    @inline(__always)
    public func layerNormBackward(dout: UnsafePointer<Float>, x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                  rstd: UnsafePointer<Float>, gamma: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                                  dgamma: UnsafeMutablePointer<Float>?, dbeta: UnsafeMutablePointer<Float>?, rows: Int, dim: Int) {
        table.layer_norm_backward(dout, x, mean, rstd, gamma, dx, dgamma, dbeta, Int64(rows), Int64(dim))
    }

    @inline(__always)
    public func geluForward(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        table.gelu_forward(x, out, Int64(n))
    }

    @inline(__always)
    public func geluBackward(_ x: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int) {
        table.gelu_backward(x, dout, dx, Int64(n))
    }

    @inline(__always)
    public func softmaxRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) { table.softmax_row(x, Int64(n)) }

    @inline(__always)
    public func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
        table.exp_shift_sum(x, Int64(n), shift)
    }

    /// The first index i in 0..<n with x[i] > floor, or n.
    @inline(__always)
    public func firstAbove(_ x: UnsafePointer<Float>, _ n: Int, _ floor: Float) -> Int { Int(table.first_above(x, Int64(n), floor)) }

    @inline(__always)
    public func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> Float { table.max_value(x, Int64(n)) }

    /// One Adam(W) step, then g = 0 (see ScalarKernels.adamStep for the formula).
    @inline(__always)
    public func adamStep(w: UnsafeMutablePointer<Float>, g: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>,
                         v: UnsafeMutablePointer<Float>, n: Int, beta1: Float, beta2: Float, b2t: Float, stepSize: Float,
                         epsilon: Float, l2: Float, decay: Float) {
        table.adam_step(w, g, m, v, Int64(n), beta1, beta2, b2t, stepSize, epsilon, l2, decay)
    }
}
