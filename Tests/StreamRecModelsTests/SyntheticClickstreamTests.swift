import Foundation
import Testing
@testable import StreamRecModels

@Suite struct SyntheticClickstreamTests {
    static let config = SyntheticClickstreamConfig(users: 50, clusters: 5, itemsPerCluster: 20, eventsPerUser: 12, seed: 42)

    @Test func deterministicPerSeedAndDifferentAcrossSeeds() {
        let a = SyntheticClickstream(config: Self.config).events()
        let b = SyntheticClickstream(Self.config).events()
        var otherConfig = Self.config
        otherConfig.seed = 43
        let other = SyntheticClickstream(config: otherConfig).events()
        #expect(a == b)
        #expect(a.count == 600)
        #expect(a != other)
        #expect(a.map(\.item) != other.map(\.item))
    }

    @Test func eventsAreATimeOrderedInterleavedStream() {
        let events = SyntheticClickstream(config: Self.config).events()
        #expect(zip(events, events.dropFirst()).allSatisfy { $0.timestampMs <= $1.timestampMs })
        var lastTime: [String: Int64] = [:]
        for event in events {
            if let previous = lastTime[event.user] { #expect(event.timestampMs > previous, "per-user time strictly increases") }
            lastTime[event.user] = event.timestampMs
        }
        #expect(Set(events.map(\.user)) == Set((0..<50).map { "u\($0)" }))
        // Interleaved: most consecutive events come from different users, not one session after another.
        let switches = zip(events, events.dropFirst()).filter { $0.user != $1.user }.count
        #expect(Double(switches) / Double(events.count - 1) > 0.6, "\(switches) user switches")
        #expect(Set(events.map(\.type)).isSubset(of: ["view", "click", "purchase"]))
        #expect(Set(events.map(\.type)).count == 3)
        let catalogue = Set((0..<100).map { "i\($0)" })
        #expect(events.allSatisfy { catalogue.contains($0.item) })
    }

    @Test func sequencesAreTheEventsGroupedByUser() {
        let stream = SyntheticClickstream(config: Self.config)
        var grouped: [String: [String]] = [:]
        for event in stream.events() { grouped[event.user, default: []].append(event.item) }
        let sequences = stream.sequences()
        #expect(sequences.map(\.user) == (0..<50).map { "u\($0)" })
        for (user, items) in sequences { #expect(grouped[user] == items) }
    }

    @Test func walksFollowTheClusterOrderAsConfigured() {
        let stream = SyntheticClickstream(config: .init(users: 300, clusters: 8, itemsPerCluster: 25, eventsPerUser: 20, seed: 9))
        var moves = 0, nextInOrder = 0, sameCluster = 0
        for (_, items) in stream.sequences() {
            let numbers = items.map { Int($0.dropFirst())! }
            for (a, b) in zip(numbers, numbers.dropFirst()) {
                moves += 1
                if a / 25 == b / 25 {
                    sameCluster += 1
                    if b % 25 == (a % 25 + 1) % 25 { nextInOrder += 1 }
                }
            }
        }
        // 70% in order, plus 1/25 of the 15% random in-cluster moves that land there by chance.
        let inOrder = Double(nextInOrder) / Double(moves)
        #expect(abs(inOrder - (0.70 + 0.15 / 25)) < 0.03, "in-order share \(inOrder)")
        // 85% stay; drifting to a neighbour never lands in the same cluster when there are 8.
        #expect(abs(Double(sameCluster) / Double(moves) - 0.85) < 0.03)
    }

    @Test func userWalksDoNotDependOnTheNumberOfUsers() {
        var small = Self.config
        small.users = 5
        let fewer = SyntheticClickstream(config: small).sequences()
        let more = SyntheticClickstream(config: Self.config).sequences()
        #expect(fewer.map(\.items) == more.prefix(5).map(\.items))
    }

    @Test func generatorIsSeedableAndUniform() {
        var a = Xoshiro256StarStar(seed: 1), b = Xoshiro256StarStar(seed: 1), c = Xoshiro256StarStar(seed: 1, stream: 1)
        let first = (0..<4).map { _ in a.next() }
        #expect(first == (0..<4).map { _ in b.next() })
        #expect(first != (0..<4).map { _ in c.next() })
        var counts = [Int](repeating: 0, count: 10)
        for _ in 0..<10_000 { counts[a.nextInt(below: 10)] += 1 }
        #expect(counts.allSatisfy { abs($0 - 1000) < 150 })
        var units = SplitMix64(seed: 0)
        // SplitMix64 reference: the first output for seed 0.
        #expect(units.next() == 0xe220_a839_7b1d_cdaf)
    }
}
