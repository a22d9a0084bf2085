// The full-ranking contract: a model that scores its whole catalogue for a batch of sessions.
// Offline evaluation ranks the target against ALL items through it, and the serving adapters
// build top-K answers on it. Rows are the model's own item indices (external id = items[row]).
import Foundation

public protocol CatalogScorer: Sendable {
    /// Model row i is the external item id items[i].
    var items: [String] { get }
    /// Writes histories.count x items.count scores, row-major, into `scores` (higher is better).
    /// Each history holds model rows, oldest first; it may be empty. Must be safe to call from
    /// one thread at a time; it may use both cores internally.
    func scoreAll(histories: [[Int32]], into scores: UnsafeMutablePointer<Float>)
}
