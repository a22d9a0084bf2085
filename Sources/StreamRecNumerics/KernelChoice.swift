// Which OpenBLAS kernels a process runs, chosen and verified at start.
//
// OpenBLAS picks its kernel set ("core") from the CPU when it loads, unless OPENBLAS_CORETYPE
// names one. An OpenBLAS older than the CPU does not know it and falls back, on a 2023 Xeon as
// far as Prescott (SSE3): 2.5-4x slower than its AVX-512 kernels. Forcing the widest kernels
// blindly is no fix either: some builds compute wrong results or crash on some processors.
// So: when the library's pick is below what the CPU supports, each better core is tried in a
// child process (a crash only rules that core out) that compares sgemm/sgemv at the models'
// shapes with a double-precision reference; the best core that passes is used by re-running the
// process with OPENBLAS_CORETYPE set (OpenBLAS reads it only when it loads). Verdicts are cached
// per CPU and library build, so later starts cost nothing. A user's own OPENBLAS_CORETYPE wins.
import Foundation

/// The x86 OpenBLAS cores we know, by the vector tier their kernels need.
public enum OpenBLASCores {
    /// Cores we may choose, best first within a tier. Cooperlake is SkylakeX plus BF16 kernels.
    public static func candidates(for cpu: CPUInfo) -> [(core: String, tier: VectorTier)] {
        var list: [(String, VectorTier)] = []
        if cpu.tier >= .avx512 {
            if cpu.features.contains("avx512_bf16") { list.append(("Cooperlake", .avx512)) }
            list.append(("SkylakeX", .avx512))
        }
        if cpu.tier >= .avx2 { list.append((cpu.vendor == "AuthenticAMD" ? "Zen" : "Haswell", .avx2)) }
        if cpu.tier >= .avx { list.append(("Sandybridge", .avx)) }
        if cpu.tier >= .sse3 { list.append(("Prescott", .sse3)) }
        return list
    }

    /// The tier a core's kernels use (what its name promises; unknown names are .unknown).
    public static func tier(of core: String) -> VectorTier {
        switch core.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": .avx512
        case "haswell", "zen", "excavator": .avx2
        case "sandybridge", "bulldozer", "piledriver", "steamroller": .avx
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "opteron_sse3", "barcelona",
             "bobcat", "nano": .sse3
        case "katmai", "coppermine", "northwood", "banias", "athlon", "opteron": .baseline
        default: .unknown
        }
    }
}

/// One core's self-check result.
public struct CoreVerdict: Codable, Sendable, Equatable {
    public var core: String
    public var passed: Bool
    /// Why it failed, or the worst error seen when it passed.
    public var detail: String
    public init(core: String, passed: Bool, detail: String) {
        self.core = core
        self.passed = passed
        self.detail = detail
    }
}

/// What runs, and why.
public struct KernelDecision: Sendable, Equatable {
    public enum Source: String, Sendable { case library, verified, user }
    /// The core the process runs (or will, after re-running itself).
    public var core: String
    public var libraryPick: String
    public var source: Source
    public var reason: String
    /// Self-checks consulted (cached or run), in the order tried.
    public var verdicts: [CoreVerdict]

    public init(core: String, libraryPick: String, source: Source, reason: String, verdicts: [CoreVerdict]) {
        self.core = core
        self.libraryPick = libraryPick
        self.source = source
        self.reason = reason
        self.verdicts = verdicts
    }

    public var startLine: String { "OpenBLAS kernels: \(core) (\(source.rawValue): \(reason))" }
}

/// The decision, as a pure function of its inputs (tests fake the library's pick and the checks).
public enum KernelSelector {
    /// - Parameters:
    ///   - userCore: OPENBLAS_CORETYPE as the user set it, if at all.
    ///   - check: the self-check verdict for a core (from the cache, or a child run).
    public static func decide(cpu: CPUInfo, libraryPick: String, userCore: String?,
                              check: (String) -> CoreVerdict) -> KernelDecision {
        if let userCore, !userCore.isEmpty {
            let note = libraryPick.lowercased() == userCore.lowercased() ? "" : "; OpenBLAS runs \(libraryPick) for it"
            return KernelDecision(core: libraryPick, libraryPick: libraryPick, source: .user,
                                  reason: "OPENBLAS_CORETYPE=\(userCore) set in the environment is respected\(note)", verdicts: [])
        }
        let pickTier = OpenBLASCores.tier(of: libraryPick)
        if pickTier >= cpu.tier {
            return KernelDecision(core: libraryPick, libraryPick: libraryPick, source: .library,
                                  reason: "OpenBLAS's own pick uses the CPU's widest vectors (\(cpu.tier))", verdicts: [])
        }
        var verdicts: [CoreVerdict] = []
        for (core, tier) in OpenBLASCores.candidates(for: cpu) where tier > pickTier {
            let verdict = check(core)
            verdicts.append(verdict)
            if verdict.passed {
                return KernelDecision(core: core, libraryPick: libraryPick, source: .verified,
                                      reason: "OpenBLAS picked \(libraryPick) (\(pickTier)) on a CPU with \(cpu.tier); \(core) passed the self-check (\(verdict.detail))",
                                      verdicts: verdicts)
            }
        }
        let failed = verdicts.map { "\($0.core): \($0.detail)" }.joined(separator: "; ")
        return KernelDecision(core: libraryPick, libraryPick: libraryPick, source: .library,
                              reason: "OpenBLAS picked \(libraryPick) (\(pickTier)) on a CPU with \(cpu.tier); no better core passed the self-check (\(failed))",
                              verdicts: verdicts)
    }
}

/// Cached verdicts in one JSON file, keyed by CPU identity and OpenBLAS build.
public struct VerdictCache {
    public let url: URL
    public let key: String

    /// $STREAMREC_CACHE_DIR, else $XDG_CACHE_HOME/streamrec, else ~/.cache/streamrec.
    public static func defaultDirectory(environment: [String: String]) -> URL {
        if let dir = environment["STREAMREC_CACHE_DIR"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return URL(fileURLWithPath: xdg).appendingPathComponent("streamrec") }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSTemporaryDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".cache/streamrec")
    }

    public init(directory: URL, cpu: CPUInfo, library: String) {
        url = directory.appendingPathComponent("openblas-kernels.json")
        key = "\(cpu.identity) | \(library)"
    }

    private func readAll() throws -> [String: [String: CoreVerdict]] {
        guard FileManager.default.fileExists(atPath: url.path) else { return [:] }
        return try JSONDecoder().decode([String: [String: CoreVerdict]].self, from: Data(contentsOf: url))
    }

    /// A stored verdict for this CPU and library, if any. An unreadable cache reads as empty:
    /// the checks then run again, which costs a second, never correctness.
    public func verdict(for core: String) -> CoreVerdict? { (try? readAll())?[key]?[core] }

    /// Stores a verdict (atomic replace: two instances starting together cannot tear the file).
    public func store(_ verdict: CoreVerdict) throws {
        var all = (try? readAll()) ?? [:]
        all[key, default: [:]][verdict.core] = verdict
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(all).write(to: url, options: .atomic)
    }
}

/// The numeric self-check a child process runs under one OpenBLAS core.
public enum BLASSelfCheck {
    /// The shapes the models use: SASRec (d 64, FFN 256, ML-1M's 3,417 items), DiffuRec (d 128,
    /// 12,101 items), MiniLM (384 x 1,536), batch-1 and batched, with the transposes backward
    /// uses, an accumulate (beta = 1) and odd sizes that exercise every kernel edge.
    static let gemmShapes: [(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Float, beta: Float)] = [
        (1, 64, 64, false, true, 1, 0), (400, 64, 64, false, false, 1, 0), (200, 256, 64, false, false, 1, 0),
        (200, 64, 256, false, false, 1, 1), (64, 64, 200, true, false, 1, 1), (50, 3417, 64, false, true, 1, 0),
        (7, 12101, 128, false, true, 1, 0), (100, 128, 128, true, false, 0.5, 1), (32, 1536, 384, false, true, 1, 0),
        (33, 17, 65, false, false, 0.25, 1), (100, 100, 32, false, true, 0.125, 0),
    ]
    static let gemvShapes: [(m: Int, n: Int, trans: Bool)] = [(3417, 64, false), (64, 256, true), (12101, 128, false), (37, 129, true)]

    /// The tolerance: |c - reference| <= k * 2^-22 * sum_i |alpha a_i b_i| + |beta c0| * 2^-22,
    /// twice float's worst-case accumulation bound. Wrong kernels miss it by orders of magnitude.
    public static let tolerancePerTerm: Double = 1.0 / Double(1 << 22)

    /// Runs every shape; returns (passed, worst error as a fraction of its bound, or the failure).
    public static func run() -> (passed: Bool, detail: String) {
        var rng = RandomSource(seed: 0x5eed)
        var worst = 0.0
        for s in gemmShapes {
            let a = (0..<(s.m * s.k)).map { _ in (rng.uniform() * 2 - 1) }
            let b = (0..<(s.k * s.n)).map { _ in (rng.uniform() * 2 - 1) }
            let c0 = (0..<(s.m * s.n)).map { _ in (rng.uniform() * 2 - 1) }
            var c = c0
            let lda = s.transA ? s.m : s.k, ldb = s.transB ? s.k : s.n
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                BLAS.gemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, alpha: s.alpha, a: ap.baseAddress!, lda: lda,
                          b: bp.baseAddress!, ldb: ldb, beta: s.beta, c: cp.baseAddress!, ldc: s.n)
            } } }
            for i in 0..<s.m {
                for j in 0..<s.n {
                    var ref = 0.0, mag = 0.0
                    for p in 0..<s.k {
                        let x = Double(s.transA ? a[p * lda + i] : a[i * lda + p]) * Double(s.transB ? b[j * ldb + p] : b[p * ldb + j])
                        ref += x
                        mag += abs(x)
                    }
                    ref = Double(s.alpha) * ref + Double(s.beta) * Double(c0[i * s.n + j])
                    let bound = tolerancePerTerm * (Double(s.k) * abs(Double(s.alpha)) * mag + abs(Double(s.beta) * Double(c0[i * s.n + j]))) + 1e-30
                    let err = abs(Double(c[i * s.n + j]) - ref)
                    guard err.isFinite, err <= bound else {
                        return (false, String(format: "sgemm %dx%dx%d%@%@ at [%d,%d]: %.6g, reference %.6g", s.m, s.n, s.k,
                                              s.transA ? " A^T" : "", s.transB ? " B^T" : "", i, j, Double(c[i * s.n + j]), ref))
                    }
                    worst = max(worst, err / bound)
                }
            }
        }
        for s in gemvShapes {
            let a = (0..<(s.m * s.n)).map { _ in (rng.uniform() * 2 - 1) }
            let xLength = s.trans ? s.m : s.n, yLength = s.trans ? s.n : s.m
            let x = (0..<xLength).map { _ in (rng.uniform() * 2 - 1) }
            var y = [Float](repeating: 0, count: yLength)
            a.withUnsafeBufferPointer { ap in x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                BLAS.gemv(trans: s.trans, m: s.m, n: s.n, a: ap.baseAddress!, lda: s.n, x: xp.baseAddress!, y: yp.baseAddress!)
            } } }
            for r in 0..<yLength {
                var ref = 0.0, mag = 0.0
                for p in 0..<xLength {
                    let v = Double(s.trans ? a[p * s.n + r] : a[r * s.n + p]) * Double(x[p])
                    ref += v
                    mag += abs(v)
                }
                let bound = tolerancePerTerm * Double(xLength) * mag + 1e-30
                let err = abs(Double(y[r]) - ref)
                guard err.isFinite, err <= bound else {
                    return (false, String(format: "sgemv %dx%d%@ at %d: %.6g, reference %.6g", s.m, s.n, s.trans ? " A^T" : "", r, Double(y[r]), ref))
                }
                worst = max(worst, err / bound)
            }
        }
        return (true, String(format: "sgemm and sgemv at %d shapes, worst error %.1e of the bound", gemmShapes.count + gemvShapes.count, worst))
    }
}

/// Runs one core's self-check in a child process and reads its verdict. The child is this
/// executable with `arguments`, OPENBLAS_CORETYPE set to the core; it prints one JSON
/// CoreVerdict line on stdout. A crash, an illegal instruction, a hang or a core that OpenBLAS
/// silently replaces rule the core out.
public enum SelfCheckRunner {
    public static func run(core: String, executable: URL, arguments: [String], environment: [String: String],
                           timeout: TimeInterval = 60) -> CoreVerdict {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var env = environment
        env["OPENBLAS_CORETYPE"] = core
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        do { try process.run() } catch {
            return CoreVerdict(core: core, passed: false, detail: "the self-check could not start: \(error)")
        }
        // The child prints one short line, well under a pipe's buffer: wait first, then read.
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return CoreVerdict(core: core, passed: false, detail: "the self-check hung for \(Int(timeout)) s")
        }
        let output = out.fileHandleForReading.readDataToEndOfFile()
        if process.terminationReason == .uncaughtSignal {
            return CoreVerdict(core: core, passed: false, detail: "the self-check died of signal \(process.terminationStatus)\(signalName(process.terminationStatus))")
        }
        guard let line = String(decoding: output, as: UTF8.self).split(separator: "\n").last,
              let verdict = try? JSONDecoder().decode(CoreVerdict.self, from: Data(line.utf8)) else {
            return CoreVerdict(core: core, passed: false, detail: "the self-check exited \(process.terminationStatus) without a verdict")
        }
        guard verdict.core.lowercased() == core.lowercased() else {
            return CoreVerdict(core: core, passed: false, detail: "OpenBLAS ran \(verdict.core) when asked for \(core)")
        }
        return CoreVerdict(core: core, passed: verdict.passed && process.terminationStatus == 0, detail: verdict.detail)
    }

    private static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGILL: " (illegal instruction)"
        case SIGSEGV: " (segmentation fault)"
        case SIGBUS: " (bus error)"
        case SIGFPE: " (arithmetic exception)"
        case SIGABRT: " (abort)"
        case SIGKILL: " (killed)"
        default: ""
        }
    }
}
