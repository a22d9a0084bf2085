// The threads behind Parallel: workers - 1 long-lived threads that spin briefly between jobs
// before they park. Why not DispatchQueue.concurrentPerform: a batch-1 inference issues about a
// thousand small parallel ops (32 diffusion steps x ~30 ops), and waking a parked thread costs
// tens of microseconds on a virtual machine (a halted vCPU); measured here, DiffuRec's 32-step
// batch-1 latency was 25% WORSE on two threads than on one. A worker that keeps spinning for a
// moment after its job picks up the next op at once, as OpenMP's active wait does.
import Foundation
import Synchronization

final class WorkerPool: @unchecked Sendable {
    /// Threads besides the caller's.
    let helpers: Int
    /// How long a worker spins for the next job before it parks.
    let spinNanoseconds: UInt64

    /// Bumped once per job; workers wait for it to move.
    private let generation = Atomic<Int>(0)
    /// Helpers still running the current job.
    private let pending = Atomic<Int>(0)
    /// Held by the thread running a job: one job at a time; other callers run inline.
    private let busy = Atomic<Bool>(false)
    /// Per helper: whether it is parked, and what wakes it.
    private final class Parking: Sendable {
        let sleeping = Atomic<Bool>(false)
        let wakeup = DispatchSemaphore(value: 0)
    }
    private let parking: [Parking]
    /// The current job: set before `generation` is bumped, read by helpers after they see it move.
    nonisolated(unsafe) private var job: ((Int) -> Void)?

    init(helpers: Int, spinNanoseconds: UInt64 = 200_000) {
        self.helpers = helpers
        self.spinNanoseconds = spinNanoseconds
        parking = (0..<helpers).map { _ in Parking() }
        for h in 0..<helpers {
            let thread = Thread { [unowned self] in self.serve(helper: h) }
            thread.name = "streamrec-worker-\(h + 1)"
            thread.stackSize = 1 << 22
            thread.start()
        }
    }

    /// Runs body(0..<parts) with part 0 on the calling thread and part i on helper i - 1, and
    /// returns when all are done. parts <= helpers + 1. Returns false without running anything
    /// when the pool is already running a job (a nested or concurrent call): the caller then
    /// runs the parts itself.
    func run(parts: Int, _ body: (Int) -> Void) -> Bool {
        precondition(parts >= 1 && parts <= helpers + 1)
        guard parts > 1, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        withoutActuallyEscaping(body) { body in
            job = { part in if part < parts { body(part) } }
            pending.store(helpers, ordering: .relaxed)
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            for p in parking where p.sleeping.exchange(false, ordering: .sequentiallyConsistent) { p.wakeup.signal() }
            body(0)
            while pending.load(ordering: .acquiring) > 0 {}
            job = nil
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    private func serve(helper h: Int) {
        // The value before any job: a job posted before this thread first runs is still seen.
        var seen = 0
        while true {
            let spinStart = DispatchTime.now().uptimeNanoseconds
            var current = generation.load(ordering: .acquiring)
            var spins = 0
            while current == seen {
                spins += 1
                // Check the clock only now and then: it costs more than a load.
                if spins & 255 == 0, DispatchTime.now().uptimeNanoseconds - spinStart > spinNanoseconds {
                    // Park: announce it, then look once more, so a job posted in between is not missed.
                    parking[h].sleeping.store(true, ordering: .sequentiallyConsistent)
                    if generation.load(ordering: .sequentiallyConsistent) == seen { parking[h].wakeup.wait() }
                    // A wake-up left over from a race only makes a later park return early.
                    parking[h].sleeping.store(false, ordering: .sequentiallyConsistent)
                    break
                }
                current = generation.load(ordering: .acquiring)
            }
            current = generation.load(ordering: .acquiring)
            guard current != seen else { continue }
            seen = current
            job?(h + 1)
            pending.wrappingSubtract(1, ordering: .releasing)
        }
    }
}
