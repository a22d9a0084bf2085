// A deterministic clickstream with learnable sequential structure, for the demo and the tests.
//
// Items live in `clusters` clusters of `itemsPerCluster`; item "i<n>" is position n % itemsPerCluster
// of cluster n / itemsPerCluster, and each cluster is walked in position order. After each event
// a user moves to the next item in order (followOrder), to a random item of the same cluster
// (stayInCluster), or drifts to a random item of a neighbouring cluster (the rest). A sequential
// model can learn "after i<n> comes i<n+1>"; popularity cannot, since every item is about as popular.
//
// Each user draws from a random stream of their own (seed, user number), so a user's walk does not
// depend on how many other users there are; users start at random times within
// `arrivalSpreadMs` and their events interleave in time like a real stream.
import Foundation

public struct SyntheticClickstreamConfig: Sendable, Equatable {
    public var users: Int
    public var clusters: Int
    public var itemsPerCluster: Int
    public var eventsPerUser: Int
    public var seed: UInt64
    /// Probability that the next event is the next item in cluster order.
    public var followOrder = 0.70
    /// Probability that it is a random item of the same cluster; the rest drifts to a neighbour.
    public var stayInCluster = 0.15
    public var startMs: Int64 = 1_700_000_000_000
    /// Users' first events are spread uniformly over this long.
    public var arrivalSpreadMs: Int64 = 3_600_000
    /// Mean gap between one user's consecutive events (exponentially distributed, at least 1 ms).
    public var meanGapMs = 30_000.0

    public init(users: Int = 1000, clusters: Int = 20, itemsPerCluster: Int = 50, eventsPerUser: Int = 30, seed: UInt64 = 1) {
        self.users = users
        self.clusters = clusters
        self.itemsPerCluster = itemsPerCluster
        self.eventsPerUser = eventsPerUser
        self.seed = seed
    }
}

public struct SyntheticEvent: Sendable, Equatable, Hashable {
    public var user: String
    public var item: String
    public var timestampMs: Int64
    /// "view", "click" or "purchase".
    public var type: String

    public init(user: String, item: String, timestampMs: Int64, type: String) {
        self.user = user
        self.item = item
        self.timestampMs = timestampMs
        self.type = type
    }
}

/// SplitMix64: turns any seed, even 0 or 1, into well-mixed state for xoshiro.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// xoshiro256**: fast, small, and the same sequence on every platform and Swift version (unlike
/// the standard library's generator and its `random(in:)` mapping, which may change).
public struct Xoshiro256StarStar: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64

    /// `stream` selects an independent sequence for the same seed (e.g. one per user).
    public init(seed: UInt64, stream: UInt64 = 0) {
        var streamMixer = SplitMix64(seed: stream)
        var mixer = SplitMix64(seed: seed ^ streamMixer.next())
        s0 = mixer.next()
        s1 = mixer.next()
        s2 = mixer.next()
        s3 = mixer.next()
    }

    public mutating func next() -> UInt64 {
        let result = rotateLeft(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = rotateLeft(s3, 45)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// Uniform in 0..<bound (bound > 0), by multiply-high: the bias, at most bound / 2^64, is
    /// far below anything a test could see.
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        return Int(next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    private func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 {
        (x << k) | (x >> (64 - k))
    }
}

public struct SyntheticClickstream: Sendable {
    public let config: SyntheticClickstreamConfig

    public init(config: SyntheticClickstreamConfig) {
        self.config = config
    }

    public init(_ config: SyntheticClickstreamConfig) {
        self.init(config: config)
    }

    public var itemCount: Int { max(1, config.clusters) * max(1, config.itemsPerCluster) }

    /// The external id of a cluster's item at `position` in the cluster order.
    public func item(cluster: Int, position: Int) -> String {
        "i\(cluster * max(1, config.itemsPerCluster) + position)"
    }

    /// Every event of every user, in time order (equal times: lower user number, then earlier event).
    public func events() -> [SyntheticEvent] {
        var all: [(user: Int, step: Int, event: SyntheticEvent)] = []
        all.reserveCapacity(max(0, config.users) * max(0, config.eventsPerUser))
        for user in 0..<max(0, config.users) {
            for (step, event) in walk(user: user).enumerated() { all.append((user, step, event)) }
        }
        all.sort { ($0.event.timestampMs, $0.user, $0.step) < ($1.event.timestampMs, $1.user, $1.step) }
        return all.map(\.event)
    }

    /// Each user's items in time order, users in number order: the same data as `events()`,
    /// grouped, without sorting the whole stream.
    public func sequences() -> [(user: String, items: [String])] {
        (0..<max(0, config.users)).compactMap { user in
            let events = walk(user: user)
            return events.isEmpty ? nil : (user: "u\(user)", items: events.map(\.item))
        }
    }

    /// One user's events; timestamps strictly increase.
    private func walk(user: Int) -> [SyntheticEvent] {
        let clusters = max(1, config.clusters)
        let itemsPerCluster = max(1, config.itemsPerCluster)
        var random = Xoshiro256StarStar(seed: config.seed, stream: UInt64(user))
        var cluster = random.nextInt(below: clusters)
        var position = random.nextInt(below: itemsPerCluster)
        var timestamp = config.startMs + Int64(random.nextUnit() * Double(max(0, config.arrivalSpreadMs)))
        let name = "u\(user)"
        var events: [SyntheticEvent] = []
        events.reserveCapacity(max(0, config.eventsPerUser))
        for _ in 0..<max(0, config.eventsPerUser) {
            events.append(SyntheticEvent(user: name, item: item(cluster: cluster, position: position),
                                         timestampMs: timestamp, type: Self.eventType(random.nextUnit())))
            let move = random.nextUnit()
            if move < config.followOrder {
                position = (position + 1) % itemsPerCluster
            } else if move < config.followOrder + config.stayInCluster {
                position = random.nextInt(below: itemsPerCluster)
            } else {
                cluster = (cluster + (random.nextUnit() < 0.5 ? clusters - 1 : 1)) % clusters
                position = random.nextInt(below: itemsPerCluster)
            }
            // Exponential gaps (a Poisson process per user); 1 - u is in (0, 1], so the log is finite.
            timestamp += 1 + Int64(-log(1 - random.nextUnit()) * config.meanGapMs)
        }
        return events
    }

    private static func eventType(_ u: Double) -> String {
        u < 0.80 ? "view" : (u < 0.95 ? "click" : "purchase")
    }
}
