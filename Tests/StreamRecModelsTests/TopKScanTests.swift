// TopK.scan (the native 16-at-a-time skip over a catalogue's scores) against inserting every
// candidate in order, the reference: same entries, same order, ties to the lower id, and rows
// marked -infinity (excluded) or NaN never returned.
import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

@Suite struct TopKScanTests {
    private func reference(_ scores: [Float], k: Int, base: Int = 0) -> [TopK.Entry] {
        var top = TopK(k: k)
        for (i, s) in scores.enumerated() where s > -.infinity { top.insert(score: s, id: base + i) }
        return top.sorted()
    }

    @Test(arguments: [0, 1, 5, 10, 17, 100, 5000])
    func scanMatchesInsertingEveryRow(k: Int) {
        var rng = RandomSource(seed: UInt64(k) + 1)
        for n in [0, 1, 15, 16, 17, 33, 1000, 3706] {
            // Coarse values make ties common; some rows excluded, some NaN, a rising tail.
            var scores = (0..<n).map { _ in Float(Int(rng.uniform() * 20)) / 4 }
            for i in stride(from: 3, to: n, by: 7) { scores[i] = -.infinity }
            for i in stride(from: 5, to: n, by: 41) { scores[i] = .nan }
            for i in stride(from: max(0, n - 20), to: n, by: 1) where i % 2 == 0 { scores[i] = 5 + Float(i) / Float(n) }
            var top = TopK(k: k)
            scores.withUnsafeBufferPointer { top.scan($0.baseAddress!, count: n, base: 7) }
            let got = top.sorted()
            #expect(got == reference(scores, k: k, base: 7), "n \(n), k \(k)")
            #expect(got.allSatisfy { !$0.score.isNaN && $0.score > -.infinity })
        }
    }

    @Test func everyRowExcludedGivesNothing() {
        var top = TopK(k: 3)
        let scores = [Float](repeating: -.infinity, count: 40)
        scores.withUnsafeBufferPointer { top.scan($0.baseAddress!, count: 40) }
        #expect(top.sorted().isEmpty)
    }
}
