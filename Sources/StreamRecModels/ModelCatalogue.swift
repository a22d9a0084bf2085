// The model catalogue: what every model is, and the one list of them. Loading a snapshot,
// `train`, `retrain`, `evaluate`, the demo and the swap benchmark go through the catalogue, never
// through a switch on kind names; an unknown kind is refused with the list of known ones.
//
// A model is one file: its settings struct (ModelSettings), its model type (CatalogueModel: load,
// save, score a batch, plug into the serving adapter) and a family (ModelFamily: kind names,
// load, train from a job). Adding it to `ModelCatalogue.standard` is one line.
import Foundation

/// A trained model, whatever its family.
public protocol CatalogueModel: CatalogScorer {
    /// The snapshot kind (a family may have several, e.g. the DiffuRec variants).
    var kind: String { get }
    var version: String { get }
    /// Everything the model saves: tensors, hyper-parameters (its Settings, encoded), manifest
    /// fields. The catalogue adds what every model shares (item popularity) and writes it.
    func snapshotWriter() throws -> SnapshotWriter
    /// The model's part of serving: scores for sessions, plugged into the one serving adapter.
    func sessionScorer(_ options: ServingOptions) -> any SessionScorer
    /// Popularity the model keeps itself (the transition model's), used when the snapshot has
    /// no `item_popularity` tensor.
    var ownPopularity: [Float]? { get }
}

extension CatalogueModel {
    public var ownPopularity: [Float]? { nil }
}

/// What a training run gets, whatever the model: the data, where to checkpoint, how to report.
public struct TrainingJob {
    public enum Holdout: String, Sendable, CaseIterable {
        /// Hold out each user's last two items (validation and test targets): honest evaluation.
        case loo
        /// Train on everything (for serving); validation still picks the epoch.
        case none
    }

    /// The kind asked for (`llm2sasrec`, `diffurecsys-v1`, ...): one of the family's kinds.
    public var kind: String
    public var dataset: SequenceDataset
    public var holdout: Holdout
    /// Recorded in the snapshot's training summary ("DATA (holdout loo)").
    public var source: String
    /// An embedding cache (`streamrec embed`) or a TSV of item vectors, for the text-based models.
    public var embeddings: String?
    /// Checkpoint path (written every epoch by the neural models); nil = none.
    public var checkpoint: String?
    public var resume = false
    /// The model serving now, for a warm start (retrain); families that cannot use it say so.
    public var current: Snapshot?
    public var progressInterval = 0.5
    public var progress: (TrainingProgress) -> Void = { _ in }
    public var log: (String) -> Void = { _ in }

    public init(kind: String, dataset: SequenceDataset, holdout: Holdout = .loo, source: String) {
        self.kind = kind
        self.dataset = dataset
        self.holdout = holdout
        self.source = source
    }

    /// The split every trainer uses; `.none` trains on every interaction.
    public func split(leadingItems: [String] = []) -> EncodedSplit {
        var split = EncodedSplit(dataset, leadingItems: leadingItems)
        if holdout == .none { split.train = dataset.sequences.map { $0.items.map { split.rowOf[$0]! } } }
        return split
    }

    /// The training sequences in external ids (what popularity is counted on).
    public var trainingSequences: [[String]] {
        holdout == .loo ? dataset.leaveOneOut().train : dataset.sequences.map(\.items)
    }
}

/// What the epoch-loop trainers (SASRec, BERT4Rec, DiffuRec) share, so a family runs one the
/// same way (`TrainingJob.run`).
public protocol EpochTrainer: AnyObject {
    var history: [EpochRecord] { get }
    var bestNDCG: Double { get }
    var completedEpochs: Int { get }
    func resume(from path: String) throws
    func fit(_ split: EncodedSplit, checkpoint: String?, progressInterval: Double,
             progress: ((TrainingProgress) -> Void)?, log: ((String) -> Void)?) throws
}

extension TrainingJob {
    /// Resumes `trainer` from the job's checkpoint when asked and one exists, logs `what` it
    /// trains on, trains, and returns the history and the summary line for `name`.
    func run(_ trainer: some EpochTrainer, on split: EncodedSplit, name: String? = nil,
             what: String? = nil) throws -> (history: [EpochRecord], summary: String) {
        if resume, let checkpoint, FileManager.default.fileExists(atPath: checkpoint) {
            try trainer.resume(from: checkpoint)
            log("resumed from \(checkpoint) after epoch \(trainer.completedEpochs)")
        }
        let name = name ?? kind
        log("training \(name) on \(what ?? "\(split.train.count) sequences"), \(split.items.count) items, \(split.validation.count) validation cases")
        try trainer.fit(split, checkpoint: checkpoint, progressInterval: progressInterval, progress: progress, log: log)
        return (trainer.history, String(format: "trained %@: best validation NDCG@10 %.4f after %d epochs", name, trainer.bestNDCG, trainer.completedEpochs))
    }
}

public struct TrainingResult {
    public var model: any CatalogueModel
    /// Per-epoch history for the report (empty for models without epochs).
    public var history: [EpochRecord] = []
    /// One line for the console: what was trained and how well.
    public var summary: String
    /// Settings the report lists (the model's hyper-parameters plus notes such as the warm start).
    public var reportSettings: [String: String]
    /// How a warm start went, when the job had a current model.
    public var warmStart: String?

    public init(model: any CatalogueModel, history: [EpochRecord] = [], summary: String, reportSettings: [String: String], warmStart: String? = nil) {
        self.model = model
        self.history = history
        self.summary = summary
        self.reportSettings = reportSettings
        self.warmStart = warmStart
    }
}

/// A model family: its kinds, its settings, how to load and train it.
public protocol ModelFamily {
    associatedtype Settings: ModelSettings
    /// The family's name: config keys are `train.<name>.<key>`.
    static var name: String { get }
    /// Snapshot kinds this family loads.
    static var kinds: [String] { get }
    /// Kinds `train --model` accepts (defaults to `kinds`; LLM2SASRec trains as `llm2sasrec`
    /// and saves as `sasrec`).
    static var trainKinds: [String] { get }
    /// One line for help texts.
    static var summary: String { get }
    /// Settings fixed by the kind asked for (DiffuRec's variant).
    static func settings(_ settings: Settings, forKind kind: String) -> Settings
    static func load(_ snapshot: Snapshot) throws -> any CatalogueModel
    static func train(_ job: TrainingJob, settings: Settings) throws -> TrainingResult
}

extension ModelFamily {
    public static var trainKinds: [String] { kinds }
    public static func settings(_ settings: Settings, forKind kind: String) -> Settings { settings }
}

/// A family with its types erased, as the catalogue lists it.
public struct CatalogueEntry: @unchecked Sendable {
    public let name: String
    public let kinds: [String]
    public let trainKinds: [String]
    public let summary: String
    /// Every setting: key, other accepted spellings, default, what it means.
    public let settingKeys: [(name: String, aliases: [String], defaultValue: String, doc: String)]
    private let check: ([String: String]) -> SettingError?
    private let checkOne: (String, String) -> SettingError?
    private let loader: (Snapshot) throws -> any CatalogueModel
    private let trainer: (TrainingJob, [String: String]) throws -> TrainingResult
    private let resolver: ([String: String], String) throws -> [String: String]

    public init<F: ModelFamily>(_ family: F.Type) {
        name = F.name
        kinds = F.kinds
        trainKinds = F.trainKinds
        summary = F.summary
        settingKeys = F.Settings.keyTable
        check = { values in
            do throws(SettingError) { _ = try F.Settings(values: values) } catch { return error }
            return nil
        }
        checkOne = { key, value in
            var settings = F.Settings()
            do throws(SettingError) { try settings.set(key, value) } catch { return error }
            return nil
        }
        loader = F.load
        resolver = { values, kind in F.settings(try F.Settings(values: values), forKind: kind).hyperParameters }
        trainer = { job, values in
            let settings = F.settings(try F.Settings(values: values), forKind: job.kind)
            return try F.train(job, settings: settings)
        }
    }

    /// Checks setting values (key -> text) against the family's key table, and across keys.
    public func check(_ values: [String: String]) -> SettingError? { check(values) }
    /// Checks one value alone (a config file may set the key it must agree with later).
    public func check(key: String, value: String) -> SettingError? { checkOne(key, value) }
    /// Whether the family has a setting of this name (or alias).
    public func hasSetting(_ key: String) -> Bool {
        let k = key.replacingOccurrences(of: "-", with: "_")
        return settingKeys.contains { $0.name == k || $0.aliases.contains(k) }
    }
    /// The values among `values` that name settings of this family (shared presets, such as the
    /// demo's, apply to whichever model they are used with).
    public func applicable(_ values: [String: String]) -> [String: String] { values.filter { hasSetting($0.key) } }
    /// The settings a training run of `kind` would use, as text (defaults plus `values`).
    public func resolvedSettings(_ values: [String: String], kind: String) throws -> [String: String] { try resolver(values, kind) }
    public func load(_ snapshot: Snapshot) throws -> any CatalogueModel { try loader(snapshot) }
    public func train(_ job: TrainingJob, settings: [String: String]) throws -> TrainingResult { try trainer(job, settings) }
}

/// A loaded model and the popularity that serves its cold users.
public struct LoadedModel {
    public let model: any CatalogueModel
    /// Per model row; nil when the snapshot predates `item_popularity` and the model keeps none.
    public let popularity: [Float]?

    public init(model: any CatalogueModel, popularity: [Float]?) {
        self.model = model
        self.popularity = popularity
    }
}

/// The one list of models.
public struct ModelCatalogue: Sendable {
    public let entries: [CatalogueEntry]

    public init(_ entries: [CatalogueEntry]) { self.entries = entries }

    /// Every model this build serves, trains and evaluates: one line each.
    public static let standard = ModelCatalogue([
        CatalogueEntry(TransitionFamily.self),
        CatalogueEntry(SASRecFamily.self),
        CatalogueEntry(DiffuRecFamily.self),
        CatalogueEntry(LLMSeqSimFamily.self),
        CatalogueEntry(BERT4RecFamily.self),
    ])

    /// This catalogue and one more family (tests add their own model this way).
    public func adding(_ entry: CatalogueEntry) -> ModelCatalogue { ModelCatalogue(entries + [entry]) }

    public var kinds: [String] { entries.flatMap(\.kinds) }
    public var trainKinds: [String] { entries.flatMap(\.trainKinds) }

    public func entry(forKind kind: String) -> CatalogueEntry? { entries.first { $0.kinds.contains(kind) } }
    public func entry(forTrainKind kind: String) -> CatalogueEntry? { entries.first { $0.trainKinds.contains(kind) } }
    public func entry(named name: String) -> CatalogueEntry? { entries.first { $0.name == name } }

    /// The family that trains `kind`, or an error that lists the known kinds.
    public func trainer(for kind: String) throws -> CatalogueEntry {
        guard let entry = entry(forTrainKind: kind) else {
            throw ModelError(.unsupported, "unknown model '\(kind)'; known: \(trainKinds.joined(separator: ", "))")
        }
        return entry
    }

    /// Builds the model a verified snapshot holds, chosen by its manifest kind, with the
    /// popularity that answers its cold users.
    public func load(_ snapshot: Snapshot) throws -> LoadedModel {
        guard let entry = entry(forKind: snapshot.manifest.kind) else {
            throw ModelError(.unsupported, "snapshot \(snapshot.path): model kind '\(snapshot.manifest.kind)' is not known to this build (known: \(kinds.joined(separator: ", "))); upgrade streamrec or pass another snapshot")
        }
        let model = try entry.load(snapshot)
        var popularity = model.ownPopularity
        if snapshot.tensor(named: Self.popularityTensor) != nil {
            let counts = try snapshot.ints(Self.popularityTensor, shape: [snapshot.manifest.items.count])
            guard counts.allSatisfy({ $0 >= 0 }) else {
                throw ModelError(.badSnapshot, "snapshot \(snapshot.path): \(Self.popularityTensor) holds negative counts; retrain the model")
            }
            popularity = counts.map(Float.init)
        }
        return LoadedModel(model: model, popularity: popularity)
    }

    public func load(path: String) throws -> LoadedModel { try load(try Snapshot.read(path: path)) }

    /// Trains `job.kind` with `settings` (key -> text over the family's defaults).
    public func train(_ job: TrainingJob, settings: [String: String] = [:]) throws -> TrainingResult {
        try trainer(for: job.kind).train(job, settings: settings)
    }

    /// Item occurrence counts per model row, in the training sequences: the cold-user answer.
    public static let popularityTensor = "item_popularity"

    public static func popularity(of items: [String], in sequences: [[String]]) -> [Int32] {
        var rowOf: [String: Int] = [:]
        for (row, item) in items.enumerated() { rowOf[item] = row }
        var counts = [Int32](repeating: 0, count: items.count)
        for sequence in sequences { for item in sequence { if let row = rowOf[item] { counts[row] &+= 1 } } }
        return counts
    }

    /// Writes the model durably, with the popularity of its items in `trainingSequences` (unless
    /// the model keeps its own), and returns the written version.
    @discardableResult
    public static func save(_ model: any CatalogueModel, trainingSequences: [[String]]?, to path: String) throws -> String {
        var writer = try model.snapshotWriter()
        if model.ownPopularity == nil, let trainingSequences {
            try writer.add(popularityTensor, ints: popularity(of: model.items, in: trainingSequences), shape: [model.items.count])
        }
        try writer.write(to: path)
        return writer.modelVersion ?? writer.contentVersion
    }
}
