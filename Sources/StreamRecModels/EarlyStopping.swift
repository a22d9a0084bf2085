// Validation bookkeeping shared by every trainer: the best validation NDCG@10 so far, the
// weights that reached it, and how many validations have passed without improvement. It goes
// into checkpoints so a resumed run stops exactly where an uninterrupted one would.
import Foundation
import StreamRecNumerics

struct EarlyStopping {
    private(set) var bestNDCG: Double = -1
    private(set) var bestWeights: [Float]?
    private(set) var stale = 0

    /// Records one validation; returns true when `patience` validations in a row failed to improve.
    mutating func observe(_ ndcg: Double, patience: Int, weights: () -> [Float]) -> Bool {
        if ndcg > bestNDCG {
            bestNDCG = ndcg
            bestWeights = weights()
            stale = 0
            return false
        }
        stale += 1
        return stale >= patience
    }

    /// Puts the best weights back (no-op before the first validation).
    func restoreBest(into store: ParameterStore) {
        bestWeights?.withUnsafeBufferPointer { store.values.update(from: $0.baseAddress!, count: store.count) }
    }

    /// The counters a checkpoint's manifest keeps.
    var checkpointFields: [String: String] { ["best_ndcg": "\(bestNDCG)", "stale": "\(stale)"] }

    /// The best weights as the checkpoint tensor "best" (the current ones before any validation).
    func addBest(to writer: inout SnapshotWriter, current: [Float]) throws {
        try writer.add("best", floats: bestWeights ?? current, shape: [current.count])
    }

    mutating func restore(from p: [String: String], _ snapshot: Snapshot, count: Int) throws {
        bestNDCG = Double(p["best_ndcg"] ?? "-1") ?? -1
        stale = Int(p["stale"] ?? "0") ?? 0
        bestWeights = bestNDCG >= 0 ? try snapshot.floats("best", shape: [count]) : nil
    }
}
