// The spinning worker pool behind Parallel: every part runs exactly once per job, a job posted
// before the helper threads first run is not lost, parked helpers wake, and nested or concurrent
// callers are refused (they then run the parts themselves) rather than deadlocking.
import Foundation
import Synchronization
import Testing
@testable import StreamRecNumerics

@Suite struct WorkerPoolTests {
    /// Counts per part, written by whichever thread runs the part.
    final class Counts: @unchecked Sendable {
        var values: [Int]
        init(_ n: Int) { values = [Int](repeating: 0, count: n) }
    }

    @Test func everyPartRunsOnceFromTheFirstJobOn() {
        // A fresh pool: the first job is posted at once, before its helpers may have started.
        let pool = WorkerPool(helpers: 3, spinNanoseconds: 50_000)
        for round in 0..<2_000 {
            let parts = 1 + round % 4
            let counts = Counts(parts)
            let ran = pool.run(parts: parts) { part in counts.values[part] += 1 }
            // One part runs inline without the pool.
            #expect(ran == (parts > 1))
            if ran { #expect(counts.values == [Int](repeating: 1, count: parts), "round \(round)") }
        }
    }

    @Test func parkedHelpersWakeForTheNextJob() {
        let pool = WorkerPool(helpers: 1, spinNanoseconds: 1_000)
        for _ in 0..<5 {
            // Longer than the spin: the helper has parked by the next job.
            Thread.sleep(forTimeInterval: 0.01)
            let counts = Counts(2)
            #expect(pool.run(parts: 2) { counts.values[$0] += 1 })
            #expect(counts.values == [1, 1])
        }
    }

    @Test func aNestedCallIsRefusedNotDeadlocked() {
        let pool = WorkerPool(helpers: 1)
        let nested = Counts(2)
        let ran = pool.run(parts: 2) { part in
            nested.values[part] = pool.run(parts: 2) { _ in } ? 1 : -1
        }
        #expect(ran)
        #expect(nested.values == [-1, -1])
    }

    @Test func parallelChunksFromManyThreadsAllComplete() {
        // Concurrent callers share the one pool; the ones it refuses fall back to Dispatch.
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 16) { caller in
            for _ in 0..<50 {
                let sums = Counts(Parallel.workers)
                Parallel.chunks(10_000) { range, worker in sums.values[worker] += range.reduce(0, +) }
                total.wrappingAdd(sums.values.reduce(0, +) == 49_995_000 ? 1 : 0, ordering: .relaxed)
            }
            _ = caller
        }
        #expect(total.load(ordering: .relaxed) == 16 * 50)
    }
}
