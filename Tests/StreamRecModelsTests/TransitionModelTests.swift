import Foundation
import Testing
@testable import StreamRecModels

@Suite struct TransitionModelTests {
    static let chain = (0..<10).map { "c\($0)" }

    @Test func learnsTheSuccessorTable() {
        let model = TransitionModel.train(sequences: Array(repeating: Self.chain, count: 4), config: TransitionConfig())
        #expect(model.items == Self.chain)
        // c3 is followed by c4, c5, c6 at distances 1, 2, 3: masses 1, 1/2, 1/3 of 11/6.
        let successors = model.successors(of: "c3")
        #expect(successors.map(\.item) == ["c4", "c5", "c6"])
        for (got, expected) in zip(successors.map(\.weight), [6.0 / 11, 3.0 / 11, 2.0 / 11]) {
            #expect(abs(Double(got) - expected) < 1e-6)
        }
        #expect(model.successors(of: "c9").isEmpty)
        #expect(model.successors(of: "unknown").isEmpty)
    }

    @Test func keepsOnlyTheTopSuccessorsNormalisedOverAllMass() {
        // a is followed by b three times, c twice, d once.
        let sequences = [["a", "b"], ["a", "b"], ["a", "b"], ["a", "c"], ["a", "c"], ["a", "d"]]
        let model = TransitionModel.train(sequences: sequences, config: TransitionConfig(window: 1, successorsPerItem: 2))
        let successors = model.successors(of: "a")
        #expect(successors.map(\.item) == ["b", "c"])
        #expect(successors.map(\.weight) == [0.5, Float(2.0 / 6)])
    }

    @Test func ranksTheLearnedSuccessorFirstOnADeterministicChain() {
        let model = TransitionModel.train(sequences: Array(repeating: Self.chain, count: 20), config: TransitionConfig())
        let vocabulary = TestVocabulary()
        let recommender = model.bind(itemID: vocabulary.id)
        for i in 0..<9 {
            let history = Self.chain[...i].map(vocabulary.id)
            let answers = recommender.recommend([
                RecommendationRequest(user: "u", history: history, k: 3, exclude: Set(history)),
                RecommendationRequest(user: "u", history: history, k: 3, exclude: []),
            ])
            #expect(vocabulary.names(answers[0]).first == Self.chain[i + 1], "after \(Self.chain[i]), excluding the history")
            #expect(vocabulary.names(answers[1]).first == Self.chain[i + 1], "after \(Self.chain[i]), nothing excluded")
            // Only unseen items remain, and popular ones fill what transitions do not cover.
            #expect(answers[0].count == min(3, Self.chain.count - (i + 1)))
        }
    }

    @Test func answersHonourKExclusionAndHaveNoDuplicates() {
        let stream = SyntheticClickstream(config: .init(users: 60, clusters: 4, itemsPerCluster: 10, eventsPerUser: 15, seed: 7))
        let sequences = stream.sequences().map(\.items)
        let model = TransitionModel.train(sequences: sequences, config: TransitionConfig())
        let vocabulary = TestVocabulary()
        let recommender = model.bind(itemID: vocabulary.id)
        var random = Xoshiro256StarStar(seed: 11)
        var requests: [RecommendationRequest] = []
        for sequence in sequences {
            let history = sequence.prefix(1 + random.nextInt(below: sequence.count)).map(vocabulary.id) + [ItemID(90_000)]
            var exclude = Set(history)
            for _ in 0..<random.nextInt(below: 8) { exclude.insert(ItemID(1 + random.nextInt(below: 45))) }
            let k = [0, 1, 5, 10, 39, 40, 1000, Int.max, -3][random.nextInt(below: 9)]
            requests.append(RecommendationRequest(user: "u", history: history, k: k, exclude: exclude))
        }
        let answers = recommender.recommend(requests)
        #expect(answers.count == requests.count)
        for (request, answer) in zip(requests, answers) {
            let servable = Set(vocabulary.idOf.values).subtracting(request.exclude).count
            #expect(answer.count == min(max(request.k, 0), servable), "k \(request.k)")
            #expect(Set(answer.map(\.item)).count == answer.count)
            #expect(answer.allSatisfy { !request.exclude.contains($0.item) && $0.item != 0 })
            #expect(zip(answer, answer.dropFirst()).allSatisfy { $0.score >= $1.score })
        }
    }

    @Test func coldAndUnknownSessionsGetPopularItems() {
        let sequences = [["a", "b"], ["a", "c"], ["b", "a"], ["d", "b"], ["a"]]
        let model = TransitionModel.train(sequences: sequences, config: TransitionConfig())
        #expect(model.popularItems(limit: 3) == ["a", "b", "c"])
        let vocabulary = TestVocabulary()
        let recommender = model.bind(itemID: vocabulary.id)
        let requests = [
            RecommendationRequest(user: "new", history: [], k: 3, exclude: []),
            // Ids the model never saw, including 0 and ones far beyond anything bound.
            RecommendationRequest(user: "new", history: [0, 999, 12_345, ItemID.max], k: 3, exclude: []),
            RecommendationRequest(user: "new", history: [ItemID.max], k: 3, exclude: [vocabulary.id("a")]),
        ]
        let answers = recommender.recommend(requests)
        #expect(vocabulary.names(answers[0]) == ["a", "b", "c"])
        #expect(vocabulary.names(answers[1]) == ["a", "b", "c"])
        #expect(vocabulary.names(answers[2]) == ["b", "c", "d"])
        #expect(answers[0].map(\.score) == answers[1].map(\.score))
    }

    @Test func popularFillScoresStayBelowEveryTransitionScore() {
        let sequences = [["a", "b"], ["x", "y"], ["x", "y"], ["x", "z"], ["y", "z"]]
        let model = TransitionModel.train(sequences: sequences, config: TransitionConfig())
        let vocabulary = TestVocabulary()
        let recommender = model.bind(itemID: vocabulary.id)
        let answer = recommender.recommend([RecommendationRequest(user: "u", history: [vocabulary.id("a")], k: 5, exclude: [])])[0]
        // x and y tie on popularity (3 each): the earlier item comes first.
        #expect(vocabulary.names(answer) == ["b", "x", "y", "z", "a"])
        #expect(answer[0].score == 1)
        #expect(answer.dropFirst().allSatisfy { $0.score < answer[0].score })
    }

    @Test func bindingThatRepeatsOrZeroesIdsNeverYieldsDuplicatesOrZero() {
        let model = TransitionModel.train(sequences: [["a", "b", "c", "d"], ["a", "c"]], config: TransitionConfig())
        // A broken vocabulary: c shares b's id, d gets 0.
        let ids: [String: ItemID] = ["a": 1, "b": 2, "c": 2, "d": 0]
        let recommender = model.bind { ids[$0]! }
        let answer = recommender.recommend([RecommendationRequest(user: "u", history: [1], k: 10, exclude: [])])[0]
        #expect(answer.map(\.item) == [2, 1])
    }

    @Test func descriptorNamesTheModelAndItsVersion() throws {
        let model = TransitionModel.train(sequences: [Self.chain], config: TransitionConfig())
        let again = TransitionModel.train(sequences: [Self.chain], config: TransitionConfig())
        let other = TransitionModel.train(sequences: [Self.chain], config: TransitionConfig(window: 2))
        #expect(model.version.count == 12)
        #expect(model.version == again.version, "the same data and settings give the same version")
        #expect(model.version != other.version)
        let descriptor = model.bind { _ in 1 }.descriptor
        #expect(descriptor == ModelDescriptor(name: "transition", version: model.version))
    }

    @Test func snapshotRoundTripPreservesScores() throws {
        let directory = try TemporaryDirectory()
        let sequences = SyntheticClickstream(config: .init(users: 80, clusters: 5, itemsPerCluster: 12, eventsPerUser: 12, seed: 5)).sequences().map(\.items)
        let config = TransitionConfig(window: 2, successorsPerItem: 7, historyItems: 4, recencyDecay: 0.5)
        let model = TransitionModel.train(sequences: sequences, config: config, source: "synthetic")
        let path = directory.path("transition.snap")
        try model.save(to: path, metrics: ["hr@10": 0.5])
        let loaded = try TransitionModel.load(path: path)
        #expect(loaded.version == model.version)
        #expect(loaded.items == model.items)
        #expect(loaded.config == config)
        #expect(loaded.training == SnapshotManifest.TrainingSummary(users: 80, items: model.items.count, interactions: 960, source: "synthetic"))
        let manifest = try Snapshot.read(path: path).manifest
        #expect(manifest.kind == "transition")
        #expect(manifest.metrics == ["hr@10": 0.5])

        let original = TestVocabulary(), reloaded = TestVocabulary()
        let a = model.bind(itemID: original.id), b = loaded.bind(itemID: reloaded.id)
        #expect(a.descriptor == b.descriptor)
        let histories = sequences.prefix(30).map { Array($0.prefix(6)) } + [[]]
        let answersA = a.recommend(histories.map { RecommendationRequest(user: "u", history: $0.map(original.id), k: 10, exclude: []) })
        let answersB = b.recommend(histories.map { RecommendationRequest(user: "u", history: $0.map(reloaded.id), k: 10, exclude: []) })
        for (x, y) in zip(answersA, answersB) {
            #expect(original.names(x) == reloaded.names(y))
            #expect(x.map(\.score) == y.map(\.score))
        }
    }

    @Test func loadRefusesOtherKindsAndInconsistentTables() throws {
        let directory = try TemporaryDirectory()
        let training = SnapshotManifest.TrainingSummary(users: 1, items: 2, interactions: 2, source: "unit")
        func write(kind: String = "transition", successors: [Int32] = [1], hyper: [String: String]? = nil) throws -> String {
            var writer = SnapshotWriter(kind: kind, items: ["a", "b"], hyperParameters: hyper ?? TransitionConfig().hyperParameters, training: training)
            try writer.add("successor_offsets", ints: [0, 1, 1], shape: [3])
            try writer.add("successor_items", ints: successors, shape: [1])
            try writer.add("successor_weights", floats: [1], shape: [1])
            try writer.add("popularity", floats: [1, 1], shape: [2])
            let path = directory.path("\(UUID().uuidString).snap")
            try writer.write(to: path)
            return path
        }
        #expect(try TransitionModel.load(path: try write()).successors(of: "a").map(\.item) == ["b"])
        let sasrec = try write(kind: "sasrec")
        #expect(modelError { _ = try TransitionModel.load(path: sasrec) }?.message.contains("holds a 'sasrec' model") == true)
        let outOfRange = try write(successors: [7])
        let error = modelError { _ = try TransitionModel.load(path: outOfRange) }
        #expect(error?.code == .badSnapshot)
        #expect(error?.message.contains(outOfRange) == true)
        #expect(error?.message.contains("successor_items") == true)
        let badHyper = try write(hyper: ["window": "three"])
        #expect(modelError { _ = try TransitionModel.load(path: badHyper) }?.message.contains("hyper-parameter 'window'") == true)
    }

    @Test func beatsPopularityByAClearMarginOnTheSyntheticStream() {
        let stream = SyntheticClickstream(config: .init(users: 400, clusters: 10, itemsPerCluster: 30, eventsPerUser: 20, seed: 3))
        let split = SequenceDataset(sequences: stream.sequences(), source: "synthetic").leaveOneOut()
        let training = zip(split.train, split.validation).map { $0 + ($1.map { [$0] } ?? []) }
        let model = TransitionModel.train(sequences: training, config: TransitionConfig())
        let vocabulary = TestVocabulary()
        let transition = evaluateNextItem(recommender: model.bind(itemID: vocabulary.id), cases: split.testCases, itemID: vocabulary.id, k: 10)
        let popularity = evaluateNextItem(recommender: PopularityRecommender(sequences: training, itemID: vocabulary.id),
                                          cases: split.testCases, itemID: vocabulary.id, k: 10)
        print("synthetic HR@10: transition \(transition.hitRate) (NDCG@10 \(transition.ndcg)), popularity \(popularity.hitRate) (NDCG@10 \(popularity.ndcg)) over \(transition.cases) users")
        #expect(transition.cases == 400)
        #expect(transition.hitRate > 0.6)
        #expect(transition.hitRate > 3 * popularity.hitRate)
        #expect(transition.hitRate - popularity.hitRate > 0.4)
        #expect(transition.ndcg > popularity.ndcg)
    }

    @Test func servesALargeCatalogueWithoutPerItemWorkPerRequest() {
        // 100k items, each seen about twice; a micro-batch of 500 sessions.
        let itemCount = 100_000
        let sequences = (0..<20_000).map { u in (0..<10).map { "i\((u * 10 + $0 * 7) % itemCount)" } }
        let trainingStart = Date()
        let model = TransitionModel.train(sequences: sequences, config: TransitionConfig())
        let trainingSeconds = Date().timeIntervalSince(trainingStart)
        #expect(model.items.count == itemCount)
        let recommender = model.bind { ItemID($0.dropFirst())! + 1 }
        let requests = (0..<500).map { u in
            let history = sequences[u * 37].prefix(6).map { ItemID($0.dropFirst())! + 1 }
            return RecommendationRequest(user: "u\(u)", history: history, k: 20, exclude: Set(history))
        }
        let start = Date()
        let answers = recommender.recommend(requests)
        let seconds = Date().timeIntervalSince(start)
        print("100k-item catalogue: trained on 200k interactions in \(trainingSeconds) s; 500 requests answered in \(seconds) s")
        #expect(answers.allSatisfy { $0.count == 20 })
        // Generous bound for a debug build on a shared machine; release is far faster.
        #expect(seconds < 1.0, "500 requests took \(seconds) s")
    }
}
