// The OpenBLAS kernel choice (KernelChoice.swift): the decision with a faked library pick and
// faked self-checks, the verdict cache, the child-process runner on children that crash, hang
// or lie, the real self-check, and cpuid against the kernel's own reading.
import Foundation
import Testing
@testable import StreamRecNumerics

private let avx512Intel = CPUInfo(vendor: "GenuineIntel", brand: "test Xeon", family: 6, model: 207, stepping: 2,
                                  features: ["sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl",
                                             "avx512_bf16", "avx512_fp16", "avx512_vnni"])
private let avx2AMD = CPUInfo(vendor: "AuthenticAMD", brand: "test EPYC", family: 23, model: 49, stepping: 0,
                              features: ["sse3", "avx", "avx2", "fma"])

/// Records which cores were checked and answers from a table (default: pass).
private final class FakeChecks {
    var asked: [String] = []
    let failing: Set<String>
    init(failing: Set<String> = []) { self.failing = failing }
    func check(_ core: String) -> CoreVerdict {
        asked.append(core)
        return failing.contains(core) ? CoreVerdict(core: core, passed: false, detail: "wrong sgemm result")
            : CoreVerdict(core: core, passed: true, detail: "ok")
    }
}

@Suite struct KernelSelectorTests {
    @Test func aFallbackPickIsReplacedByTheBestCoreThatPasses() {
        let checks = FakeChecks()
        let d = KernelSelector.decide(cpu: avx512Intel, libraryPick: "Prescott", userCore: nil, check: checks.check)
        #expect(d.core == "Cooperlake")
        #expect(d.source == .verified)
        #expect(d.libraryPick == "Prescott")
        #expect(checks.asked == ["Cooperlake"])
        #expect(d.startLine.contains("OpenBLAS picked Prescott"))
        #expect(d.startLine.contains("Cooperlake passed the self-check"))
    }

    @Test func aFailingCoreIsRuledOutAndTheNextOneDownIsTried() {
        let checks = FakeChecks(failing: ["Cooperlake", "SkylakeX"])
        let d = KernelSelector.decide(cpu: avx512Intel, libraryPick: "Prescott", userCore: nil, check: checks.check)
        #expect(d.core == "Haswell")
        #expect(d.source == .verified)
        #expect(checks.asked == ["Cooperlake", "SkylakeX", "Haswell"])
        #expect(d.verdicts.map(\.passed) == [false, false, true])
    }

    @Test func whenEveryBetterCoreFailsTheLibraryPickStaysAndTheLineSaysWhy() {
        let checks = FakeChecks(failing: ["Cooperlake", "SkylakeX", "Haswell", "Sandybridge"])
        let d = KernelSelector.decide(cpu: avx512Intel, libraryPick: "Prescott", userCore: nil, check: checks.check)
        #expect(d.core == "Prescott")
        #expect(d.source == .library)
        // Prescott is the pick's own tier: never "checked" as an upgrade.
        #expect(checks.asked == ["Cooperlake", "SkylakeX", "Haswell", "Sandybridge"])
        #expect(d.reason.contains("SkylakeX: wrong sgemm result"))
    }

    @Test func onlyCoresAboveThePicksTierAreTried() {
        let checks = FakeChecks(failing: ["Cooperlake", "SkylakeX"])
        let d = KernelSelector.decide(cpu: avx512Intel, libraryPick: "Haswell", userCore: nil, check: checks.check)
        #expect(d.core == "Haswell")
        #expect(checks.asked == ["Cooperlake", "SkylakeX"])
    }

    @Test func aPickThatUsesTheWidestVectorsIsKeptWithoutChecks() {
        let checks = FakeChecks()
        let d = KernelSelector.decide(cpu: avx512Intel, libraryPick: "SkylakeX", userCore: nil, check: checks.check)
        #expect(d.core == "SkylakeX" && d.source == .library && checks.asked.isEmpty)
        let amd = KernelSelector.decide(cpu: avx2AMD, libraryPick: "Zen", userCore: nil, check: checks.check)
        #expect(amd.core == "Zen" && amd.source == .library && checks.asked.isEmpty)
    }

    @Test func anUnknownPickIsTreatedAsBelowEveryTier() {
        let checks = FakeChecks()
        let d = KernelSelector.decide(cpu: avx2AMD, libraryPick: "Mystery", userCore: nil, check: checks.check)
        #expect(d.core == "Zen" && d.source == .verified && checks.asked == ["Zen"])
    }

    @Test func theUsersCoreTypeIsRespectedAndNothingIsChecked() {
        let checks = FakeChecks()
        let d = KernelSelector.decide(cpu: avx512Intel, libraryPick: "Haswell", userCore: "Haswell", check: checks.check)
        #expect(d.core == "Haswell" && d.source == .user && checks.asked.isEmpty)
        #expect(d.startLine.contains("OPENBLAS_CORETYPE=Haswell set in the environment is respected"))
    }

    @Test func coreTiersFollowTheirVectorWidth() {
        #expect(OpenBLASCores.tier(of: "SkylakeX") == .avx512)
        #expect(OpenBLASCores.tier(of: "cooperlake") == .avx512)
        #expect(OpenBLASCores.tier(of: "Zen") == .avx2)
        #expect(OpenBLASCores.tier(of: "Prescott") == .sse3)
        #expect(OpenBLASCores.tier(of: "nonsense") == .unknown)
        #expect(OpenBLASCores.candidates(for: avx2AMD).map(\.core) == ["Zen", "Sandybridge", "Prescott"])
        #expect(OpenBLASCores.candidates(for: avx512Intel).map(\.core) == ["Cooperlake", "SkylakeX", "Haswell", "Sandybridge", "Prescott"])
    }
}

@Suite struct VerdictCacheTests {
    @Test func verdictsAreKeptPerCPUAndLibrary() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("verdicts-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = VerdictCache(directory: dir, cpu: avx512Intel, library: "OpenBLAS 0.3.21")
        #expect(cache.verdict(for: "SkylakeX") == nil)
        try cache.store(CoreVerdict(core: "SkylakeX", passed: false, detail: "crashed"))
        try cache.store(CoreVerdict(core: "Haswell", passed: true, detail: "ok"))
        #expect(cache.verdict(for: "SkylakeX") == CoreVerdict(core: "SkylakeX", passed: false, detail: "crashed"))
        #expect(cache.verdict(for: "Haswell")?.passed == true)
        // Another library build or another CPU model starts from nothing.
        #expect(VerdictCache(directory: dir, cpu: avx512Intel, library: "OpenBLAS 0.3.26").verdict(for: "Haswell") == nil)
        #expect(VerdictCache(directory: dir, cpu: avx2AMD, library: "OpenBLAS 0.3.21").verdict(for: "Haswell") == nil)
    }

    @Test func theDirectoryFollowsTheEnvironment() {
        #expect(VerdictCache.defaultDirectory(environment: ["STREAMREC_CACHE_DIR": "/a", "XDG_CACHE_HOME": "/b"]).path == "/a")
        #expect(VerdictCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "/b", "HOME": "/h"]).path == "/b/streamrec")
        #expect(VerdictCache.defaultDirectory(environment: ["HOME": "/h"]).path == "/h/.cache/streamrec")
    }
}

@Suite struct SelfCheckRunnerTests {
    private func shell(_ script: String, core: String = "SkylakeX", timeout: TimeInterval = 30) -> CoreVerdict {
        SelfCheckRunner.run(core: core, executable: URL(fileURLWithPath: "/bin/sh"), arguments: ["-c", script],
                            environment: ProcessInfo.processInfo.environment, timeout: timeout)
    }

    @Test func anIllegalInstructionRulesTheCoreOut() {
        let v = shell("kill -ILL $$")
        #expect(!v.passed)
        #expect(v.detail.contains("illegal instruction"))
    }

    @Test func aSegfaultRulesTheCoreOut() {
        let v = shell("kill -SEGV $$")
        #expect(!v.passed && v.detail.contains("segmentation fault"))
    }

    @Test func aChildThatRanAnotherCoreIsRefused() {
        let v = shell(#"echo '{"core":"Prescott","passed":true,"detail":"ok"}'"#)
        #expect(!v.passed)
        #expect(v.detail.contains("OpenBLAS ran Prescott when asked for SkylakeX"))
    }

    @Test func theChildSeesTheCoreTypeAndItsVerdictIsRead() {
        // The child echoes the OPENBLAS_CORETYPE it was given back as its core.
        let v = shell(#"printf '{"core":"%s","passed":true,"detail":"fine"}\n' "$OPENBLAS_CORETYPE""#, core: "Haswell")
        #expect(v == CoreVerdict(core: "Haswell", passed: true, detail: "fine"))
    }

    @Test func aFailedCheckAndAMissingVerdictFail() {
        #expect(!shell(#"echo '{"core":"SkylakeX","passed":false,"detail":"bad"}'; exit 1"#).passed)
        let v = shell("exit 0")
        #expect(!v.passed && v.detail.contains("without a verdict"))
    }

    @Test func aHangingChildIsKilled() {
        let v = shell("sleep 30", timeout: 0.5)
        #expect(!v.passed && v.detail.contains("hung"))
    }
}

@Suite struct BLASSelfCheckTests {
    @Test func theLoadedCorePassesTheSelfCheck() {
        let r = BLASSelfCheck.run()
        #expect(r.passed, "\(BLAS.kernelCore): \(r.detail)")
    }

    @Test func cpuidAgreesWithTheKernelsReading() throws {
        // Linux's /proc/cpuinfo flags come from the same cpuid bits, masked by what the OS enabled.
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/cpuinfo"))
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        guard let flagsLine = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
        let flags = Set(flagsLine.split(separator: ":")[1].split(separator: " ").map(String.init))
        let cpu = CPUInfo.current
        for feature in ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16"] {
            #expect(cpu.features.contains(feature) == flags.contains(feature), "\(feature)")
        }
        #expect(cpu.features.contains("sse3") == flags.contains("pni"))
    }
}
