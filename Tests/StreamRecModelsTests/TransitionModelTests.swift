import Foundation
import Testing
@testable import StreamRecModels

@Suite struct TransitionModelTests {
    /// Binds with ids 1, 2, 3... in the order asked, like a fresh vocabulary.
    final class Ids {
        var map: [String: ItemID] = [:]
        func id(_ s: String) -> ItemID {
            if let i = map[s] { return i }
            let i = ItemID(map.count + 1)
            map[s] = i
            return i
        }
        func name(_ i: ItemID) -> String? { map.first { $0.value == i }?.key }
    }

    @Test func learnsADeterministicChain() {
        let chain = (0..<10).map { "c\($0)" }
        let model = TransitionModel.train(sequences: Array(repeating: chain, count: 20), config: TransitionConfig())
        let ids = Ids()
        let rec = model.bind(itemID: ids.id)
        for i in 0..<9 {
            let history = chain[...i].map { ids.id($0) }
            let out = rec.recommend([RecommendationRequest(user: "u", history: Array(history), k: 3, exclude: Set(history))])[0]
            #expect(ids.name(out[0].item) == chain[i + 1], "after \(chain[i])")
            #expect(out.count == min(3, chain.count - (i + 1)), "only unseen items remain")
        }
    }

    @Test func honoursKExclusionAndNoDuplicates() {
        let seqs = (0..<50).map { u in (0..<12).map { "i\((u + $0 * 3) % 30)" } }
        let model = TransitionModel.train(sequences: seqs, config: TransitionConfig())
        let ids = Ids()
        let rec = model.bind(itemID: ids.id)
        let history = ["i1", "i4", "i7"].map(ids.id)
        for k in [1, 5, 10, 25] {
            let exclude = Set([ids.id("i10"), ids.id("i13")] + history)
            let out = rec.recommend([RecommendationRequest(user: "u", history: history, k: k, exclude: exclude)])[0]
            #expect(out.count == k)
            #expect(Set(out.map(\.item)).count == out.count)
            #expect(out.allSatisfy { !exclude.contains($0.item) })
            #expect(zip(out, out.dropFirst()).allSatisfy { $0.score >= $1.score })
        }
    }

    @Test func coldAndUnknownSessionsGetPopularItems() {
        let seqs = [["a", "b"], ["a", "c"], ["a", "b"], ["d", "a"]]
        let model = TransitionModel.train(sequences: seqs, config: TransitionConfig())
        let ids = Ids()
        let rec = model.bind(itemID: ids.id)
        let cold = rec.recommend([RecommendationRequest(user: "u", history: [], k: 2, exclude: [])])[0]
        #expect(cold.map { ids.name($0.item) } == ["a", "b"])
        // Ids the model never saw, including ones beyond anything bound.
        let unknown = rec.recommend([RecommendationRequest(user: "u", history: [999, 12345], k: 4, exclude: [])])[0]
        #expect(unknown.count == 4)
        #expect(model.popularItems(limit: 1) == ["a"])
    }

    @Test func beatsPopularityOnASyntheticStream() {
        var config = SyntheticClickstreamConfig()
        config.users = 400
        config.clusters = 10
        config.itemsPerCluster = 30
        config.eventsPerUser = 20
        config.seed = 3
        let sequences = SyntheticClickstream(config: config).sequences().map(\.items)
        let train = sequences.map { Array($0.dropLast()) }
        let model = TransitionModel.train(sequences: train, config: TransitionConfig())
        let ids = Ids()
        let rec = model.bind(itemID: ids.id)
        let cases = sequences.map { (history: Array($0.dropLast()), target: $0.last!) }
        let transition = evaluateNextItem(recommender: rec, cases: cases, itemID: { ids.id($0) }, k: 10)
        let popular = model.popularItems(limit: 300)
        var popularHits = 0
        for c in cases where popular.filter({ !c.history.contains($0) }).prefix(10).contains(c.target) { popularHits += 1 }
        let popularHR = Double(popularHits) / Double(cases.count)
        #expect(transition.hitRate(at: 10) > 0.4, "transition HR@10 \(transition.hitRate(at: 10))")
        #expect(transition.hitRate(at: 10) > popularHR + 0.25, "transition \(transition.hitRate(at: 10)) vs popularity \(popularHR)")
    }

    @Test func snapshotRoundTripKeepsScores() throws {
        let seqs = (0..<40).map { u in (0..<8).map { "i\((u * 7 + $0 * 5) % 50)" } }
        let model = TransitionModel.train(sequences: seqs, config: TransitionConfig())
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("t-\(UUID().uuidString).snap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try model.save(to: path)
        let loaded = try TransitionModel.load(path: path)
        #expect(loaded.version == model.version)
        #expect(loaded.items == model.items)
        let a = Ids(), b = Ids()
        let ra = model.bind(itemID: a.id), rb = loaded.bind(itemID: b.id)
        for u in 0..<10 {
            let h = Array(seqs[u][0..<4])
            let oa = ra.recommend([RecommendationRequest(user: "u", history: h.map(a.id), k: 10, exclude: [])])[0]
            let ob = rb.recommend([RecommendationRequest(user: "u", history: h.map(b.id), k: 10, exclude: [])])[0]
            #expect(oa.map { a.name($0.item) } == ob.map { b.name($0.item) })
            #expect(zip(oa, ob).allSatisfy { abs($0.score - $1.score) <= 1e-6 })
        }
    }
}

@Suite struct SnapshotTests {
    func written() throws -> (path: String, bytes: [UInt8]) {
        var w = SnapshotWriter(kind: "test", items: ["a", "b", "c"], hyperParameters: ["d": "4"],
                               training: .init(users: 1, items: 3, interactions: 3, source: "unit"))
        w.add("weights", floats: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        w.add("index", ints: [7, 8], shape: [2])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("s-\(UUID().uuidString).snap").path
        try w.write(to: path)
        return (path, [UInt8](FileManager.default.contents(atPath: path)!))
    }

    @Test func roundTrip() throws {
        let (path, _) = try written()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let s = try Snapshot.read(path: path)
        #expect(s.manifest.kind == "test" && s.manifest.items == ["a", "b", "c"])
        #expect(try s.floats("weights", shape: [2, 3]) == [1, 2, 3, 4, 5, 6])
        #expect(try s.ints("index") == [7, 8])
        #expect(throws: ModelError.self) { try s.floats("weights", shape: [3, 2]) }
        #expect(throws: ModelError.self) { try s.floats("missing") }
        #expect(throws: ModelError.self) { try s.ints("weights") }
    }

    func refusal(_ mutate: (inout [UInt8]) -> Void) throws -> String {
        var (path, bytes) = try written()
        defer { try? FileManager.default.removeItem(atPath: path) }
        mutate(&bytes)
        do {
            _ = try Snapshot.parse(bytes, path: path)
            return "accepted"
        } catch let e as ModelError {
            #expect(e.code == .badSnapshot)
            #expect(e.message.contains(path))
            return e.message
        }
    }

    @Test func corruptFilesAreRefusedWithTheReason() throws {
        #expect(try refusal { $0[$0.count - 20] ^= 0x01 }.contains("checksum"))
        #expect(try refusal { $0.removeLast(100) }.contains("checksum"))
        #expect(try refusal { $0 = Array($0.prefix(20)) }.contains("too short"))
        #expect(try refusal { $0[0] = UInt8(ascii: "X") }.contains("wrong magic"))
        // A newer format version, with a valid checksum: refused for the version, not the checksum.
        #expect(try refusal { bytes in
            bytes[8] = 9
            let body = Array(bytes.dropLast(8))
            let sum = SnapshotFormat.fnv1a(body)
            bytes = body + withUnsafeBytes(of: sum.littleEndian) { Array($0) }
        }.contains("newer streamrec"))
    }
}

@Suite struct DatasetTests {
    func file(_ name: String, _ text: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func sharedFormatDirectory() throws {
        let seq = try file("sequences.txt", "1 10 11 12\n2 11 12\n")
        let dir = URL(fileURLWithPath: seq).deletingLastPathComponent()
        try "item_id\ttitle\textra\n10\tTen\tx\n11\tEleven\ty\n".write(to: dir.appendingPathComponent("items.tsv"), atomically: true, encoding: .utf8)
        let ds = try SequenceDataset.load(path: dir.path)
        #expect(ds.sequences.map(\.user) == ["1", "2"])
        #expect(ds.sequences[0].items == ["10", "11", "12"])
        #expect(ds.itemText?["11"] == "Eleven y")
        #expect(ds.interactionCount == 5)
    }

    @Test func movieLensAndCSVAreSortedByTimePerUser() throws {
        let ml = try SequenceDataset.load(path: try file("ratings.dat", "1::5::3::300\n1::6::4::100\n2::5::5::50\n1::7::1::100\n"))
        #expect(ml.sequences[0].user == "1" && ml.sequences[0].items == ["6", "7", "5"])
        let csv = try SequenceDataset.load(path: try file("x.csv", "user,item,timestamp\na,x,3\na,y,1\nb,z,2\n"))
        #expect(csv.sequences[0].items == ["y", "x"])
        #expect(csv.sequences[1].items == ["z"])
    }

    @Test func badRowsNameFileAndLine() throws {
        let path = try file("ratings.dat", "1::5::3::300\n1::6::4\n")
        do {
            _ = try SequenceDataset.load(path: path)
            Issue.record("accepted a bad row")
        } catch let e as ModelError {
            #expect(e.message.contains("\(path):2"))
        }
        let csv = try file("y.csv", "a,x,1\na,y,soon\n")
        #expect(throws: ModelError.self) { try SequenceDataset.load(path: csv) }
        let seq = try file("s.txt", "1 2 3\nlonely\n")
        #expect(throws: ModelError.self) { try SequenceDataset.load(path: seq) }
    }

    @Test func leaveOneOut() {
        let ds = SequenceDataset(sequences: [("u", ["a", "b", "c", "d"]), ("v", ["x", "y"])], source: "t")
        let split = ds.leaveOneOut()
        #expect(split.train == [["a", "b"], ["x", "y"]])
        #expect(split.validation == ["c", nil])
        #expect(split.test == ["d", nil])
    }

    @Test func syntheticStreamIsDeterministicPerSeed() {
        var c = SyntheticClickstreamConfig()
        c.users = 50
        c.eventsPerUser = 10
        let a = SyntheticClickstream(config: c).events()
        let b = SyntheticClickstream(config: c).events()
        c.seed = 2
        let other = SyntheticClickstream(config: c).events()
        #expect(a == b)
        #expect(a != other)
        #expect(a.count == 500)
        #expect(zip(a, a.dropFirst()).allSatisfy { $0.timestampMs <= $1.timestampMs })
    }
}

@Suite struct MetricTests {
    @Test func handComputedValues() {
        #expect(RankingMetrics.ndcg(rank: 1, k: 10) == 1)
        #expect(abs(RankingMetrics.ndcg(rank: 3, k: 10) - 0.5) < 1e-12)
        #expect(RankingMetrics.ndcg(rank: 11, k: 10) == 0)
        #expect(RankingMetrics.hitRate(rank: 10, k: 10) == 1)
        #expect(RankingMetrics.hitRate(rank: nil, k: 10) == 0)
        var s = RankingSummary(cutoffs: [1, 5])
        s.add(rank: 1)
        s.add(rank: 4)
        s.add(rank: nil)
        #expect(abs(s.hitRate(at: 5) - 2.0 / 3) < 1e-12)
        #expect(abs(s.hitRate(at: 1) - 1.0 / 3) < 1e-12)
        #expect(abs(s.mrr - (1 + 0.25) / 3) < 1e-12)
    }

    @Test func topKMatchesAFullSort() {
        var rng = SplitMix64(seed: 9)
        let scores = (0..<1000).map { _ in Float(rng.next() % 100) }
        var top = TopK(k: 17)
        for (i, s) in scores.enumerated() { top.insert(s, Int32(i)) }
        let expected = scores.enumerated().sorted { ($0.element, -$0.offset) > ($1.element, -$1.offset) }.prefix(17).map { Int32($0.offset) }
        #expect(top.sorted().map(\.index) == expected)
    }
}
