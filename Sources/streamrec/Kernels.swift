import ArgumentParser
import Foundation
import StreamRecService
import Logging
import StreamRecKafka
import StreamRecNumerics
import StreamRecStorage
#if canImport(Glibc)
import Glibc
#endif

/// Chooses the OpenBLAS kernels at the start of every command that computes (KernelChoice.swift
/// says why and how). When a verified core beats the library's own pick, the process runs itself
/// again with OPENBLAS_CORETYPE set, which OpenBLAS reads only when it loads; a marker variable
/// tells the new image that the setting is ours, not the user's.
enum KernelStartup {
    /// "core;library pick;reason" of a choice made by an earlier image of this process.
    static let markerKey = "STREAMREC_OPENBLAS_CHOICE"
    /// Test seam: take this as OpenBLAS's own pick (as on a CPU newer than the library), so the
    /// whole path (child self-checks, cache, re-run) can be exercised on any machine.
    static let fakePickKey = "STREAMREC_FAKE_OPENBLAS_PICK"

    /// The decision for this process. May not return: it re-executes the process when a better
    /// core passed its self-check.
    static func establish(logger: Logger) -> KernelDecision {
        let environment = ProcessInfo.processInfo.environment
        let running = BLAS.kernelCore
        if let marker = environment[markerKey], let set = environment["OPENBLAS_CORETYPE"] {
            let parts = marker.split(separator: ";", maxSplits: 2).map(String.init)
            if parts.count == 3, parts[0] == set {
                if running.lowercased() != set.lowercased() {
                    logger.warning("OpenBLAS runs \(running), not the verified \(set) this process re-ran itself with")
                }
                return KernelDecision(core: running, libraryPick: parts[1], source: .verified, reason: parts[2], verdicts: [])
            }
        }
        let cpu = CPUInfo.current
        let cache = VerdictCache(directory: VerdictCache.defaultDirectory(environment: environment), cpu: cpu, library: BLAS.libraryIdentity)
        let libraryPick = environment[fakePickKey].flatMap { $0.isEmpty ? nil : $0 } ?? running
        let decision = KernelSelector.decide(cpu: cpu, libraryPick: libraryPick, userCore: environment["OPENBLAS_CORETYPE"]) { core in
            if let cached = cache.verdict(for: core) {
                return CoreVerdict(core: core, passed: cached.passed, detail: cached.detail + ", cached")
            }
            let verdict = selfCheck(core: core, environment: environment)
            do { try cache.store(verdict) } catch {
                logger.warning("could not cache the OpenBLAS self-check verdict at \(cache.url.path): \(error); it will run again next start")
            }
            return verdict
        }
        guard decision.source == .verified else { return decision }
        reexecute(with: decision, environment: environment, logger: logger)
        // Only reached when exec failed: the library's pick still computes correctly.
        return KernelDecision(core: running, libraryPick: running, source: .library,
                              reason: "\(decision.core) passed its self-check but re-running the process with it failed (errno \(errno))",
                              verdicts: decision.verdicts)
    }

    /// Runs the self-check for one core in a child process of this same executable.
    static func selfCheck(core: String, environment: [String: String]) -> CoreVerdict {
        var env = environment
        env[markerKey] = nil
        env[fakePickKey] = nil
        return SelfCheckRunner.run(core: core, executable: URL(fileURLWithPath: executablePath), arguments: ["kernel-check"],
                                   environment: env)
    }

    /// This executable's own file (not argv[0], which may be a bare name looked up in PATH).
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    private static func reexecute(with decision: KernelDecision, environment: [String: String], logger: Logger) {
        var env = environment
        env["OPENBLAS_CORETYPE"] = decision.core
        env[markerKey] = "\(decision.core);\(decision.libraryPick);\(decision.reason)"
        let argv = CommandLine.arguments.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        logger.debug("re-running with OPENBLAS_CORETYPE=\(decision.core)")
        execve(executablePath, argv, envp)
        logger.error("could not re-run \(executablePath) with OPENBLAS_CORETYPE=\(decision.core): errno \(errno)")
    }
}

extension CommonOptions {
    /// Chooses the kernels (KernelStartup) and logs the one start line that says which and why.
    @discardableResult
    func startKernels(_ logger: Logger) -> KernelDecision {
        let decision = KernelStartup.establish(logger: logger)
        var kafkaLogger = logger
        kafkaLogger[metadataKey: "source"] = "librdkafka"
        routeKafkaLogs(to: kafkaLogger)
        logger.info("\(decision.startLine); our kernels: \(KernelSet.best.name); workers: \(Parallel.workers)")
        return decision
    }
}

/// `streamrec doctor`: the CPU, the kernels chosen and why, threads and library versions.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the CPU's features, the OpenBLAS kernels chosen and why, thread counts and library versions.")

    @OptionGroup var common: CommonOptions
    @Flag(help: "Self-check every OpenBLAS core the CPU supports now, each in a child process (refreshes the cache).") var checkAll = false
    @Flag(help: "Print only the OpenBLAS cores this CPU supports that pass their self-check now, one a line (make test-kernels runs the numeric tests under each; a core that fails is never chosen).") var cores = false

    func run() throws {
        let cpu = CPUInfo.current
        if cores {
            let environment = ProcessInfo.processInfo.environment
            for (core, _) in OpenBLASCores.candidates(for: cpu) {
                let verdict = KernelStartup.selfCheck(core: core, environment: environment)
                if verdict.passed {
                    print(core)
                } else {
                    FileHandle.standardError.write(Data("\(core): ruled out, \(verdict.detail)\n".utf8))
                }
            }
            return
        }
        let logger = common.makeLogger("streamrec.doctor")
        let decision = KernelStartup.establish(logger: logger)
        let environment = ProcessInfo.processInfo.environment
        print("cpu            \(cpu.brand.isEmpty ? "unknown" : cpu.brand)")
        print("               \(cpu.vendor), family \(cpu.family) model \(cpu.model) stepping \(cpu.stepping)")
        print("features       \(cpu.features.sorted().joined(separator: " "))")
        print("vector tier    \(cpu.tier)")
        print(decision.startLine)
        print("  library pick \(decision.libraryPick)")
        print("  OPENBLAS_CORETYPE \(environment["OPENBLAS_CORETYPE"].map { $0 + (decision.source == .user ? " (set by the user)" : " (set by streamrec)") } ?? "unset")")
        for verdict in decision.verdicts {
            print("  self-check   \(verdict.core): \(verdict.passed ? "passed" : "FAILED"), \(verdict.detail)")
        }
        print("our kernels    \(KernelSet.best.name) (levels this CPU runs: \(KernelSet.supported.map(\.name).joined(separator: ", ")))")
        print("threads        workers \(Parallel.workers) (STREAMREC_THREADS \(environment["STREAMREC_THREADS"] ?? "unset")), OpenBLAS \(BLAS.libraryThreads), cores \(ProcessInfo.processInfo.activeProcessorCount)")
        print("OpenBLAS       \(BLAS.libraryConfig)")
        print("               \(BLAS.libraryPath)")
        print("librdkafka     \(KafkaLibrary.version)")
        print("LevelDB        \(LevelDBLibrary.version)")
        print("verdict cache  \(VerdictCache.defaultDirectory(environment: environment).appendingPathComponent("openblas-kernels.json").path)")
        if checkAll {
            let cache = VerdictCache(directory: VerdictCache.defaultDirectory(environment: environment), cpu: cpu, library: BLAS.libraryIdentity)
            // A failing core is a finding, not an error of this command: the choice never uses it.
            for (core, tier) in OpenBLASCores.candidates(for: cpu) {
                let verdict = KernelStartup.selfCheck(core: core, environment: environment)
                do { try cache.store(verdict) } catch { logger.warning("could not cache the verdict: \(error)") }
                print("check          \(core) (\(tier)): \(verdict.passed ? "passed" : "FAILED"), \(verdict.detail)")
            }
        }
    }
}

/// The child side of the self-check: runs BLASSelfCheck under whatever core OpenBLAS loaded and
/// prints one JSON verdict naming that core (the parent refuses a core OpenBLAS replaced).
struct KernelCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel-check", abstract: "Self-check the loaded OpenBLAS kernels (run by the kernel choice in a child process).",
        shouldDisplay: false)

    func run() throws {
        let result = BLASSelfCheck.run()
        let verdict = CoreVerdict(core: BLAS.kernelCore, passed: result.passed, detail: result.detail)
        print(String(decoding: try JSONEncoder().encode(verdict), as: UTF8.self))
        if !result.passed { throw ExitCode(1) }
    }
}
