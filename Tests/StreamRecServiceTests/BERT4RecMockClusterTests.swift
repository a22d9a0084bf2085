import Foundation
import Testing
import StreamRecKafka
import StreamRecModels
@testable import StreamRecService

/// BERT4Rec served live by the pipeline on the mock cluster: every event answered, the answers
/// follow what the model learned, and a cold user gets the snapshot's popular items.
@Suite(.serialized) struct BERT4RecMockClusterTests {
    static func event(_ user: String, _ item: String, _ ts: Int64) -> [UInt8] {
        Array(#"{"user":"\#(user)","item":"\#(item)","ts":\#(ts),"type":"click"}"#.utf8)
    }

    @Test func bert4recServesEveryEventLive() throws {
        // Deterministic walks over 20 items: after i<k> comes i<k+1>.
        let sequences = (0..<80).map { u in (0..<10).map { "i\((u + $0) % 20)" } }
        let h = try MockClusterHarness(partitions: 2, trainingSequences: []) { work in
            let dataset = SequenceDataset(sequences: sequences.enumerated().map { ("u\($0.offset)", $0.element) }, source: "walks")
            let job = TrainingJob(kind: "bert4rec", dataset: dataset, holdout: .none, source: "walks")
            let result = try ModelCatalogue.standard.train(job, settings: ["width": "16", "heads": "2", "blocks": "1", "max_length": "12",
                                                                           "epochs": "40", "eval_every": "40", "batch_size": "16",
                                                                           "learning_rate": "0.005"])
            let path = work.appendingPathComponent("bert4rec.snap").path
            try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: path)
            return path
        }
        var config = h.config()
        config.recommend.k = 3
        let service = try h.startService(config: config)
        defer { service.stop() }
        #expect(service.stack.model.recommender.descriptor.name == "bert4rec")

        var records: [(key: String?, value: [UInt8])] = []
        for u in 0..<6 {
            for step in 0..<4 { records.append(("live\(u)", Self.event("live\(u)", "i\((u * 3 + step) % 20)", Int64(1_000 + step)))) }
        }
        records.append(("cold", Self.event("cold", "never-seen", 2_000)))
        try h.produce(records)
        let out = try h.read(h.output, until: { $0.count >= records.count })
        #expect(out.count == records.count)
        let answers = out.compactMap { try? JSONSerialization.jsonObject(with: Data($0.value ?? [])) as? [String: Any] }
        var followed = 0, warm = 0
        for answer in answers {
            let items = ((answer["items"] as? [[String: Any]]) ?? []).compactMap { $0["item"] as? String }
            guard let event = answer["event_item"] as? String else { continue }
            if event == "never-seen" {
                // Cold: popular items, never empty.
                #expect(items.count == 3)
                continue
            }
            warm += 1
            #expect(items.count == 3)
            let k = Int(event.dropFirst())!
            if items.contains("i\((k + 1) % 20)") { followed += 1 }
        }
        #expect(warm == 24)
        #expect(followed >= 18, "the next item of the walk was in the top 3 for \(followed) of 24 events")
    }
}
