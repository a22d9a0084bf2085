// A deterministic clickstream with learnable structure, for the demo and for tests: items live in
// clusters with a fixed order; users walk their cluster's order with noise and drift to
// neighbouring clusters. A sequential model can learn it; popularity cannot.
import Foundation

public struct SyntheticClickstreamConfig: Sendable {
    public var users = 1000
    public var clusters = 20
    public var itemsPerCluster = 50
    public var eventsPerUser = 30
    public var seed: UInt64 = 1
    /// Probability of the next item in cluster order; of a random item in the cluster; the rest drifts.
    public var followOrder = 0.70
    public var stayInCluster = 0.15
    public var startMs: Int64 = 1_700_000_000_000
    /// Mean time between one user's events (exponential gaps).
    public var meanGapMs = 30_000.0
    public init() {}
}

public struct SyntheticEvent: Sendable, Equatable {
    public var user: String
    public var item: String
    public var timestampMs: Int64
    public var type: String
}

/// SplitMix64: tiny, fast, and the same numbers on every platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

public struct SyntheticClickstream: Sendable {
    public let config: SyntheticClickstreamConfig
    public init(config: SyntheticClickstreamConfig) { self.config = config }

    /// Every event of every user, in time order (ties by user number).
    public func events() -> [SyntheticEvent] {
        let c = config
        var rng = SplitMix64(seed: c.seed)
        var all: [(ts: Int64, user: Int, seq: Int, item: Int, type: String)] = []
        all.reserveCapacity(c.users * c.eventsPerUser)
        for u in 0..<c.users {
            var cluster = Int(rng.next() % UInt64(max(c.clusters, 1)))
            var position = Int(rng.next() % UInt64(max(c.itemsPerCluster, 1)))
            var ts = c.startMs + Int64(rng.unit() * 3_600_000)
            for s in 0..<c.eventsPerUser {
                all.append((ts, u, s, cluster * c.itemsPerCluster + position, Self.type(rng.unit())))
                let r = rng.unit()
                if r < c.followOrder {
                    position = (position + 1) % c.itemsPerCluster
                } else if r < c.followOrder + c.stayInCluster {
                    position = Int(rng.next() % UInt64(c.itemsPerCluster))
                } else {
                    cluster = (cluster + (rng.unit() < 0.5 ? c.clusters - 1 : 1)) % c.clusters
                    position = Int(rng.next() % UInt64(c.itemsPerCluster))
                }
                ts += Int64(1 + (-log(1 - rng.unit()) * c.meanGapMs))
            }
        }
        all.sort { ($0.ts, $0.user, $0.seq) < ($1.ts, $1.user, $1.seq) }
        return all.map { SyntheticEvent(user: "u\($0.user)", item: "i\($0.item)", timestampMs: $0.ts, type: $0.type) }
    }

    /// Each user's items in order.
    public func sequences() -> [(user: String, items: [String])] {
        var byUser: [String: [String]] = [:]
        for e in events() { byUser[e.user, default: []].append(e.item) }
        return (0..<config.users).compactMap { u in byUser["u\(u)"].map { ("u\(u)", $0) } }
    }

    private static func type(_ r: Double) -> String {
        r < 0.80 ? "view" : (r < 0.95 ? "click" : "purchase")
    }
}
