// `streamrec retrain`: build the training set from the input topic, train the configured model
// (warm-started from the current version when it can be), score it and the current version on
// the same held-out data, publish the candidate, and promote and announce it only if it passes
// the gate. Blocking from start to end: run it on its own thread (the CLI does).
import Foundation
import Logging
import StreamRecKafka
import StreamRecModels

/// What a retrain run did.
public struct RetrainOutcome: Sendable {
    public enum Decision: String, Sendable {
        /// Passed the gate: now current (and announced when brokers are configured).
        case promoted
        /// The candidate is the model already serving (same content hash): nothing to do.
        case unchanged
        /// Failed the gate: published (inspect it with `streamrec models show`), not promoted.
        case refused
    }

    public var decision: Decision
    public var version: String
    /// The version that was current when the run started.
    public var previous: String?
    /// Validation NDCG@10 (history excluded) of the candidate and of the current version, on the
    /// same held-out cases.
    public var candidateNDCG10: Double
    public var currentNDCG10: Double?
    /// The gate's floor: currentNDCG10 * (1 - max_regression); nil when there was no baseline.
    public var floor: Double?
    public var validationCases: Int
    public var warmStart: String
    public var data: RetrainDataset.Stats
    public var dataWindow: String
    /// The run's directory (candidate snapshot, evaluations, report).
    public var runDirectory: String
    /// Whether the new current version was announced on the model-updates topic.
    public var announced: Bool
    public var pruned: [String]

    /// The CLI's exit code: 0 promoted or unchanged, 3 refused by the gate.
    public var exitCode: Int32 { decision == .refused ? 3 : 0 }
}

/// The gate, on figures measured on the same held-out cases.
public struct RetrainGate: Sendable, Equatable {
    public var maxRegression: Double

    public init(maxRegression: Double) { self.maxRegression = maxRegression }

    /// The lowest candidate figure that passes; nil (anything passes) without a baseline.
    public func floor(current: Double?) -> Double? { current.map { $0 * (1 - maxRegression) } }

    public func passes(candidate: Double, current: Double?) -> Bool {
        guard let floor = floor(current: current) else { return true }
        return candidate >= floor
    }
}

public final class RetrainJob: @unchecked Sendable {
    public let config: StreamRecConfig
    let logger: Logger
    /// Reading the topic: (records read, records to read).
    public var onReadProgress: ((Int, Int) -> Void)?
    /// SASRec training steps.
    public var onTrainingProgress: ((TrainingProgress) -> Void)?
    /// Per-epoch lines and stage changes, for a terminal or a log file.
    public var onLog: ((String) -> Void)?
    /// Anchors the window and the run directory name (tests pin it).
    public var now: () -> Date = { Date() }

    public init(config: StreamRecConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    private func say(_ message: String) {
        logger.info("\(message)")
        onLog?(message)
    }

    public func run() throws -> RetrainOutcome {
        let settings = config.retrain
        guard let root = config.model.registry else {
            throw RetrainError(.config, "model.registry is not set: retrain publishes to the registry; set it in the config file, as STREAMREC_MODEL_REGISTRY, or with --registry")
        }
        let registry = try ModelRegistry(root: root, create: true)
        let started = now()
        let runDirectory = URL(fileURLWithPath: settings.workDirectory)
            .appendingPathComponent(Self.stamp(started) + "-" + UUID().uuidString.prefix(4).lowercased())
        do {
            try FileManager.default.createDirectory(at: runDirectory, withIntermediateDirectories: true)
        } catch {
            throw RetrainError(.config, "cannot create \(runDirectory.path): \(error.localizedDescription); set retrain.work_dir to a writable directory")
        }

        // 1. The data.
        let built = try RetrainDatasetBuilder.build(config: config, now: started, logger: logger, progress: onReadProgress)
        let s = built.stats
        say("data: \(s.topicRecords) records read (\(s.topicValid) valid, \(s.invalidTotal) invalid skipped, \(s.outsideWindow) outside the window), "
            + "\(s.baseEvents) base events, \(s.duplicates) duplicates dropped -> \(s.interactions) interactions, \(s.users) users, \(s.items) items")
        guard s.interactions >= settings.minEvents else {
            throw RetrainError(.data, "only \(s.interactions) interactions in \(built.window) (retrain.min_events is \(settings.minEvents)); widen retrain.window_hours, add retrain.base_data, or lower retrain.min_events")
        }
        let dataset = built.dataset
        let split = dataset.leaveOneOut()
        let cases = split.cases(for: .validation)
        guard !cases.isEmpty else {
            throw RetrainError(.data, "no user has 3 or more interactions, so nothing can be held out to evaluate; widen retrain.window_hours or add retrain.base_data")
        }

        // 2. The current version, scored later on the same cases.
        let currentManifest = try registry.current()
        var currentSnapshot: Snapshot? = nil
        if let currentManifest {
            do {
                currentSnapshot = try Snapshot.read(path: try registry.verifiedSnapshotPath(currentManifest.version))
            } catch {
                // A current version that cannot be loaded cannot serve either: no baseline to protect.
                logger.warning("the current version \(currentManifest.version) cannot be loaded (\(error)); gating without a baseline")
            }
        }

        // 3. Train.
        let candidatePath = runDirectory.appendingPathComponent("candidate.snap").path
        let source = "\(built.window) (holdout loo)"
        let trainStart = Date()
        var job = TrainingJob(kind: settings.model, dataset: dataset, holdout: .loo, source: source)
        job.embeddings = settings.embeddings
        job.checkpoint = candidatePath + ".ckpt"
        job.current = currentSnapshot
        if let onTrainingProgress { job.progress = onTrainingProgress }
        if let onLog { job.log = onLog }
        let family: CatalogueEntry
        do { family = try ModelCatalogue.standard.trainer(for: settings.model) } catch {
            throw RetrainError(.config, "retrain.model: \(error)")
        }
        let values = config.training[family.name] ?? [:]
        if let problem = family.check(values) {
            throw RetrainError(.config, "train.\(family.name).\(problem.key): \(problem.problem); fix the key")
        }
        let result: TrainingResult
        do { result = try family.train(job, settings: values) } catch {
            throw RetrainError(.training, "\(settings.model) training failed: \(error)")
        }
        do {
            try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: candidatePath)
        } catch { throw RetrainError(.training, "cannot write \(candidatePath): \(error)") }
        removeIfPresent(candidatePath + ".ckpt")
        let candidate: any CatalogScorer = result.model
        let warm = result.warmStart ?? "no current version"
        let history = result.history
        var hyper = result.reportSettings
        hyper["model"] = settings.model
        say(result.summary)
        let trainSeconds = Date().timeIntervalSince(trainStart)

        // 4. Score both on the same held-out cases (validation targets, history excluded).
        let evaluator = FullRankingEvaluator()
        let catalog = Set(dataset.sequences.flatMap(\.items)).count
        let candidateVersion = try Snapshot.read(path: candidatePath).manifest.modelVersion
        let candidateReport = evaluator.evaluate(scorer: candidate, cases: cases, trainingSequences: split.train, catalogItemCount: catalog,
                                                 model: ModelDescriptor(name: settings.model, version: candidateVersion),
                                                 dataset: built.window, split: "validation")
        let candidateNDCG = candidateReport.historyExcluded.cutoff(10)?.ndcg ?? 0
        var currentNDCG: Double? = nil
        if let currentSnapshot, let currentManifest {
            let scorer = try loadScorer(snapshot: currentSnapshot)
            let report = evaluator.evaluate(scorer: scorer, cases: cases, trainingSequences: split.train, catalogItemCount: catalog,
                                            model: ModelDescriptor(name: currentManifest.kind, version: currentManifest.version),
                                            dataset: built.window, split: "validation")
            currentNDCG = report.historyExcluded.cutoff(10)?.ndcg ?? 0
            let currentPath = runDirectory.appendingPathComponent("current.eval.json")
            writeReport({ try report.json().write(to: currentPath) }, currentPath.path)
        }
        let candidateEvalPath = runDirectory.appendingPathComponent("candidate.eval.json")
        writeReport({ try candidateReport.json().write(to: candidateEvalPath) }, candidateEvalPath.path)
        let gate = RetrainGate(maxRegression: settings.maxRegression)
        let floor = gate.floor(current: currentNDCG)
        let passes = gate.passes(candidate: candidateNDCG, current: currentNDCG)
        say(String(format: "validation NDCG@10 (%d held-out cases, history excluded): candidate %.4f, current %@, floor %@ -> %@",
                   cases.count, candidateNDCG, currentNDCG.map { String(format: "%.4f", $0) } ?? "none",
                   floor.map { String(format: "%.4f", $0) } ?? "none", passes ? "pass" : "FAIL"))

        // 5. The report beside the snapshot (and in the registry with it).
        var metrics: [String: Double] = ["validation_mrr": candidateReport.historyExcluded.mrr, "train_seconds": trainSeconds,
                                         "retrain_interactions": Double(s.interactions), "retrain_invalid_events": Double(s.invalidTotal)]
        for c in candidateReport.historyExcluded.cutoffs {
            metrics["validation_hr@\(c.k)"] = c.hitRate
            metrics["validation_ndcg@\(c.k)"] = c.ndcg
        }
        if let currentNDCG { metrics["gate_baseline_ndcg@10"] = currentNDCG }
        var reportSettings = hyper
        reportSettings["data_window"] = built.window
        reportSettings["warm_start"] = warm
        reportSettings["gate"] = String(format: "validation_ndcg@10 >= current x (1 - %.4f)", settings.maxRegression)
        reportSettings["gate_result"] = passes ? "pass" : "fail"
        reportSettings["current_version"] = currentManifest?.version ?? "none"
        let markdown = TrainingReport.markdown(model: settings.model, snapshot: candidatePath, settings: reportSettings,
                                               history: history, metrics: metrics, wallSeconds: trainSeconds)
        let svg = TrainingReport.svg(title: "retrain \(settings.model)", history: history)
        writeReport({ try markdown.write(toFile: candidatePath + ".report.md", atomically: true, encoding: .utf8) }, candidatePath + ".report.md")
        writeReport({ try svg.write(toFile: candidatePath + ".report.svg", atomically: true, encoding: .utf8) }, candidatePath + ".report.svg")

        // 6. Publish (a refused candidate too, so it can be inspected), then gate.
        let entry = try registry.publish(snapshotPath: candidatePath, parent: currentManifest?.version, dataWindow: built.window, metrics: metrics,
                                         attachments: ["model.snap.report.md": Data(markdown.utf8), "model.snap.report.svg": Data(svg.utf8)])
        say("published \(entry.version) (report: \(registry.directory(of: entry.version).appendingPathComponent("model.snap.report.md").path))")
        var outcome = RetrainOutcome(decision: .refused, version: entry.version, previous: currentManifest?.version, candidateNDCG10: candidateNDCG,
                                     currentNDCG10: currentNDCG, floor: floor, validationCases: cases.count, warmStart: warm, data: s,
                                     dataWindow: built.window, runDirectory: runDirectory.path, announced: false, pruned: [])
        if entry.version == currentManifest?.version {
            outcome.decision = .unchanged
            say("\(entry.version) is already current; nothing to promote")
            return outcome
        }
        guard passes else {
            say("gate failed: \(entry.version) stays published but not promoted; current is still \(currentManifest?.version ?? "none")")
            return outcome
        }
        try registry.promote(entry.version)
        outcome.decision = .promoted
        say("promoted \(entry.version) (was \(currentManifest?.version ?? "none"))")
        if let brokers = config.kafka.brokers {
            do {
                try ModelAnnouncer.announce(ModelAnnouncement(registry: registry, manifest: entry, action: "promote"), name: config.model.name,
                                            brokers: brokers, topic: config.kafka.modelUpdatesTopic, properties: config.kafka.producerProperties)
                outcome.announced = true
                say("announced \(entry.version) on \(config.kafka.modelUpdatesTopic) (key \(config.model.name))")
            } catch {
                // The pointer moved: servers follow it within model.registry_poll_ms.
                logger.warning("the announcement of \(entry.version) failed (\(error)); servers will follow the registry pointer within model.registry_poll_ms")
            }
        }
        if settings.keep > 0 {
            do { outcome.pruned = try registry.prune(keep: settings.keep) } catch {
                // The promotion stands; old versions stay until the next prune.
                logger.warning("pruning the registry failed (\(error)); old versions are kept until the next successful prune")
            }
            if !outcome.pruned.isEmpty { say("pruned \(outcome.pruned.joined(separator: " "))") }
        }
        return outcome
    }

    /// Removes a file that may not exist; a failure to remove one that does is logged, not swallowed.
    func removeIfPresent(_ path: String) {
        guard FileManager.default.fileExists(atPath: path) else { return }
        do { try FileManager.default.removeItem(atPath: path) } catch {
            logger.warning("cannot remove \(path): \(error)")
        }
    }

    /// Writes one of the run's reports; a failure is logged (the run itself still counts).
    func writeReport(_ write: () throws -> Void, _ path: String) {
        do { try write() } catch {
            logger.warning("cannot write the report \(path): \(error)")
        }
    }

    static func stamp(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return f.string(from: date)
    }
}
