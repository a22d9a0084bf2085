// Fixed-capacity least-recently-used map. Nodes live in one array linked by indices so a
// cache of 100k sessions costs no per-entry object allocations or reference counting.

public struct LRUCache<Key: Hashable, Value> {
    private struct Node {
        var key: Key
        var value: Value
        var newer: Int   // towards the most recent end; -1 at the head
        var older: Int   // towards the least recent end; -1 at the tail
    }

    public let capacity: Int
    private var nodes: [Node] = []
    private var slots: [Key: Int] = [:]
    private var newest = -1
    private var oldest = -1

    /// A capacity of 0 (or less) disables caching: nothing is ever stored.
    public init(capacity: Int) {
        self.capacity = Swift.max(0, capacity)
    }

    public var count: Int { nodes.count }

    /// Returns the value and marks it most recently used.
    public mutating func value(for key: Key) -> Value? {
        guard let slot = slots[key] else { return nil }
        moveToNewest(slot)
        return nodes[slot].value
    }

    /// Returns the value without changing its recency.
    public func peek(_ key: Key) -> Value? {
        slots[key].map { nodes[$0].value }
    }

    /// Inserts or replaces, evicting the least recently used entry when full.
    public mutating func set(_ value: Value, for key: Key) {
        guard capacity > 0 else { return }
        if let slot = slots[key] {
            nodes[slot].value = value
            moveToNewest(slot)
            return
        }
        if nodes.count == capacity {
            // Reuse the evicted entry's slot so the array never grows past capacity.
            let slot = oldest
            unlink(slot)
            slots.removeValue(forKey: nodes[slot].key)
            nodes[slot] = Node(key: key, value: value, newer: -1, older: -1)
            slots[key] = slot
            linkAsNewest(slot)
            return
        }
        nodes.append(Node(key: key, value: value, newer: -1, older: -1))
        slots[key] = nodes.count - 1
        linkAsNewest(nodes.count - 1)
    }

    public mutating func remove(_ key: Key) {
        guard let slot = slots.removeValue(forKey: key) else { return }
        unlink(slot)
        // Fill the hole with the last node so the array stays dense (and drops the value now).
        let last = nodes.count - 1
        if slot != last {
            nodes[slot] = nodes[last]
            slots[nodes[slot].key] = slot
            let newer = nodes[slot].newer, older = nodes[slot].older
            if newer >= 0 { nodes[newer].older = slot } else { newest = slot }
            if older >= 0 { nodes[older].newer = slot } else { oldest = slot }
        }
        nodes.removeLast()
    }

    public mutating func removeAll() {
        nodes.removeAll()
        slots.removeAll()
        newest = -1
        oldest = -1
    }

    /// Keys from most to least recently used; for tests and diagnostics.
    var keysByRecency: [Key] {
        var keys: [Key] = []
        var slot = newest
        while slot >= 0 {
            keys.append(nodes[slot].key)
            slot = nodes[slot].older
        }
        return keys
    }

    private mutating func moveToNewest(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        linkAsNewest(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let newer = nodes[slot].newer, older = nodes[slot].older
        if newer >= 0 { nodes[newer].older = older } else { newest = older }
        if older >= 0 { nodes[older].newer = newer } else { oldest = newer }
        nodes[slot].newer = -1
        nodes[slot].older = -1
    }

    private mutating func linkAsNewest(_ slot: Int) {
        nodes[slot].older = newest
        nodes[slot].newer = -1
        if newest >= 0 { nodes[newest].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
