import Testing
@testable import StreamRecCollections

@Suite struct LRUCacheTests {
    @Test func evictsTheLeastRecentlyUsed() {
        var cache = LRUCache<String, Int>(capacity: 3)
        cache.set(1, for: "a")
        cache.set(2, for: "b")
        cache.set(3, for: "c")
        #expect(cache.value(for: "a") == 1)        // a becomes most recent
        cache.set(4, for: "d")                     // evicts b
        #expect(cache.value(for: "b") == nil)
        #expect(cache.keysByRecency == ["d", "a", "c"])
        cache.set(30, for: "c")                    // replace refreshes recency
        #expect(cache.keysByRecency == ["c", "d", "a"])
        #expect(cache.count == 3)
    }

    @Test func removeKeepsTheListConsistent() {
        var cache = LRUCache<Int, Int>(capacity: 4)
        for k in 0..<4 { cache.set(k * 10, for: k) }
        cache.remove(0)                            // the oldest; stored in slot 0
        cache.remove(3)                            // the newest
        cache.remove(42)                           // absent: no-op
        #expect(cache.keysByRecency == [2, 1])
        cache.set(50, for: 5)
        cache.set(60, for: 6)
        cache.set(70, for: 7)                      // full again: evicts 1
        #expect(cache.keysByRecency == [7, 6, 5, 2])
        #expect(cache.value(for: 2) == 20)
        cache.removeAll()
        #expect(cache.count == 0)
        #expect(cache.keysByRecency.isEmpty)
    }

    @Test func zeroCapacityStoresNothing() {
        var cache = LRUCache<String, Int>(capacity: 0)
        cache.set(1, for: "a")
        #expect(cache.value(for: "a") == nil)
        #expect(cache.count == 0)
    }

    @Test func matchesAReferenceModelUnderRandomOperations() {
        var cache = LRUCache<Int, Int>(capacity: 5)
        var model: [(key: Int, value: Int)] = []   // most recent first
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            // xorshift: deterministic, so a failure reproduces.
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
            return Int(seed % UInt64(bound))
        }
        for step in 0..<5_000 {
            let key = next(9)
            switch next(3) {
            case 0:
                cache.set(step, for: key)
                model.removeAll { $0.key == key }
                model.insert((key, step), at: 0)
                if model.count > 5 { model.removeLast() }
            case 1:
                let expected = model.firstIndex { $0.key == key }.map { model.remove(at: $0) }
                if let expected { model.insert(expected, at: 0) }
                #expect(cache.value(for: key) == expected?.value)
            default:
                cache.remove(key)
                model.removeAll { $0.key == key }
            }
            #expect(cache.keysByRecency == model.map(\.key))
        }
    }
}
