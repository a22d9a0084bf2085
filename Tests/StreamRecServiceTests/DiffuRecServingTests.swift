import Foundation
import Testing
import StreamRecModels
import StreamRecNumerics
import StreamRecStorage
@testable import StreamRecService

@Suite struct DiffuRecServingTests {
    /// The service's loader builds every diffusion kind from its snapshot and answers a batch.
    @Test(arguments: DiffuRecConfig.Variant.allCases)
    func modelLoaderServesTheDiffusionKinds(variant: DiffuRecConfig.Variant) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-diffurec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var c = DiffuRecConfig()
        c.variant = variant
        c.width = 8; c.blocks = 1; c.heads = 2; c.maxLength = 8; c.sampleSteps = 2; c.seeds = 2
        let model = DiffuRec(config: c, items: (0..<12).map { "i\($0)" })
        let path = dir.appendingPathComponent("m.snap").path
        try ModelCatalogue.save(model, trainingSequences: [["i5", "i5", "i7"]], to: path)
        let store = try KeyValueStore(path: dir.appendingPathComponent("state").path)
        let vocabulary = try Vocabulary(store: store)
        let recommender = try ModelLoader.load(path: path, vocabulary: vocabulary, store: store)
        #expect(recommender.descriptor.name == variant.rawValue)
        let a = vocabulary.idOrAssign("i1"), b = vocabulary.idOrAssign("i2")
        let answers = recommender.recommend([RecommendationRequest(user: "u", history: [a, b], k: 4, exclude: [a, b]),
                                             RecommendationRequest(user: "v", history: [], k: 3, exclude: [])])
        #expect(answers[0].count == 4 && answers[0].allSatisfy { $0.item != a && $0.item != b })
        // A user with no session gets the snapshot's popular items, as from every model.
        #expect(answers[1].map(\.item) == [vocabulary.idOrAssign("i5"), vocabulary.idOrAssign("i7")])
    }
}
