import Foundation
import Testing
@testable import StreamRecModels
import StreamRecNumerics

/// Retrain's SASRec warm start: weights copied when the architecture matches, item rows matched
/// by external id (new items keep their fresh rows), nothing copied when it differs.
@Suite struct WarmStartTests {
    func config(width: Int = 16) -> SASRecConfig {
        var c = SASRecConfig()
        c.width = width; c.blocks = 1; c.heads = 1; c.maxLength = 8; c.seed = 1
        return c
    }

    @Test func rowsOfKnownItemsAndAllOtherWeightsAreCopied() {
        let base = SASRec(config: config(), items: ["a", "b", "c"])
        var rng = RandomSource(seed: 9)
        for entry in base.store.entries { base.store.initialize(entry.name, normalStd: 1, rng: &rng) }
        var next = config()
        next.seed = 2
        // The split puts the base items first; "d" is new, and "b" keeps its row by id anyway.
        let split = EncodedSplit(SequenceDataset(sequences: [("u", ["d", "b", "a", "c"])], source: "t"), leadingItems: base.items)
        #expect(split.items == ["a", "b", "c", "d"])
        let model = SASRec(config: next, items: split.items)
        let freshNew = Array(model.store.floats("item_embedding")[48..<64])
        #expect(model.warmStart(from: base) == .warm(copiedItems: 3, newItems: 1))
        #expect(model.store.floats("block0.qkv.weight") == base.store.floats("block0.qkv.weight"))
        #expect(model.store.floats("position_embedding") == base.store.floats("position_embedding"))
        #expect(Array(model.store.floats("item_embedding")[0..<48]) == Array(base.store.floats("item_embedding")[0..<48]))
        #expect(Array(model.store.floats("item_embedding")[48..<64]) == freshNew)

        // A subset in another order: matched by id, not by row.
        let reordered = SASRec(config: next, items: ["c", "z", "a"])
        #expect(reordered.warmStart(from: base) == .warm(copiedItems: 2, newItems: 1))
        #expect(Array(reordered.store.floats("item_embedding")[0..<16]) == Array(base.store.floats("item_embedding")[32..<48]))
    }

    @Test func anotherArchitectureTrainsFromScratch() {
        let base = SASRec(config: config(width: 16), items: ["a", "b"])
        let model = SASRec(config: config(width: 32), items: ["a", "b"])
        let before = model.store.allValues
        #expect(model.warmStart(from: base) == .scratch(reason: "width was 16, is now 32"))
        #expect(model.store.allValues == before)
    }
}
