// A model added the way every model is: this one file and one catalogue line
// (`ModelCatalogue.standard.adding(CatalogueEntry(BigramFamily.self))` in CatalogueTests).
// It scores each item by how often it followed the session's last item in training, plus a
// smoothing share of its popularity: small, but a real dense model with settings, a snapshot,
// training and serving.
//
// Shape legend: V items.   counts [V, V]: counts[a, b] = times b directly followed a.
//   score(b | session) = counts[last, b] + smoothing * popularity[b] / max popularity
import Foundation
import StreamRecModels

struct BigramSettings: ModelSettings {
    var smoothing: Float = 0.1
    static let keys: [SettingKey<BigramSettings>] = [
        .float("smoothing", "weight of popularity under the bigram counts", 0...10, \.smoothing),
    ]
}

final class BigramModel: CatalogueModel, @unchecked Sendable {
    static let kind = "bigram"
    let settings: BigramSettings
    let items: [String]
    let counts: [Float]
    var version = ""
    var kind: String { Self.kind }

    init(settings: BigramSettings, items: [String], counts: [Float]) {
        self.settings = settings
        self.items = items
        self.counts = counts
    }

    func scoreAll(histories: [[Int32]], into scores: UnsafeMutablePointer<Float>) {
        let v = items.count
        var popularity = [Float](repeating: 0, count: v)
        for a in 0..<v { for b in 0..<v { popularity[b] += counts[a * v + b] } }
        let top = max(popularity.max() ?? 1, 1)
        for (i, history) in histories.enumerated() {
            let last = history.last.map(Int.init)
            for b in 0..<v {
                scores[i * v + b] = (last.map { counts[$0 * v + b] } ?? 0) + settings.smoothing * popularity[b] / top
            }
        }
    }

    func snapshotWriter() throws -> SnapshotWriter {
        var writer = SnapshotWriter(kind: Self.kind, items: items, hyperParameters: settings.hyperParameters,
                                    training: .init(users: 0, items: items.count, interactions: 0, source: "test"))
        try writer.add("counts", floats: counts, shape: [items.count, items.count])
        return writer
    }

    func sessionScorer(_ options: ServingOptions) -> any SessionScorer { BigramScorer(model: self) }
}

final class BigramScorer: SessionScorer, @unchecked Sendable {
    let model: BigramModel
    init(model: BigramModel) { self.model = model }
    var rowCount: Int { model.items.count }
    func score(users: [String], sessions: [[Int32]]) -> SessionScores { .dense(model, sessions: sessions) }
}

enum BigramFamily: ModelFamily {
    typealias Settings = BigramSettings
    static let name = "bigram"
    static let kinds = [BigramModel.kind]
    static let summary = "test model: next-item bigram counts"

    static func load(_ snapshot: Snapshot) throws -> any CatalogueModel {
        let settings = try BigramSettings(hyperParameters: snapshot.manifest.hyperParameters, path: snapshot.path)
        let v = snapshot.manifest.items.count
        let model = BigramModel(settings: settings, items: snapshot.manifest.items, counts: try snapshot.floats("counts", shape: [v, v]))
        model.version = snapshot.manifest.modelVersion
        return model
    }

    static func train(_ job: TrainingJob, settings: BigramSettings) throws -> TrainingResult {
        let split = job.split()
        let v = split.items.count
        var counts = [Float](repeating: 0, count: v * v)
        for sequence in split.train { for (a, b) in zip(sequence, sequence.dropFirst()) { counts[Int(a) * v + Int(b)] += 1 } }
        return TrainingResult(model: BigramModel(settings: settings, items: split.items, counts: counts),
                              summary: "counted bigrams over \(v) items", reportSettings: settings.hyperParameters)
    }
}
