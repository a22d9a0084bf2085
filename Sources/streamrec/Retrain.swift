import ArgumentParser
import Foundation
import StreamRecModels
import StreamRecService

/// `streamrec retrain --config FILE`: the nightly job (docs/operations.md, "Retrain runbook").
struct Retrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build a training set from the input topic, train, gate against the current model, publish, promote and announce.",
        discussion: """
            Settings: the retrain.* keys (and kafka.*, model.registry, model.name) of --config FILE, then STREAMREC_* \
            environment variables, then these flags. The candidate is published whether or not it passes the gate; it is \
            promoted (and announced when kafka.brokers is set) only if its validation NDCG@10 >= the current model's, \
            measured on the same held-out cases, x (1 - retrain.max_regression).
            Exit codes: 0 promoted (or already current), 3 gate failed (published, not promoted), 2 error.
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "YAML config file (retrain.*, kafka.*, model.registry; see ops/retrain.example.yaml).") var config: String?
    @Option(help: "Registry directory (model.registry).") var registry: String?
    @Option(help: "Kafka bootstrap servers (kafka.brokers).") var brokers: String?
    @Option(help: "Input topic (kafka.input_topic).") var inputTopic: String?
    @Option(help: "Hours of the topic to read, 0 = all retained (retrain.window_hours).") var windowHours: Double?
    @Option(help: "Base dataset merged in (retrain.base_data).") var baseData: String?
    @Option(help: "Model kind to train (retrain.model); its settings are the train.<family>.* keys.") var model: String?
    @Option(help: "Largest allowed relative NDCG@10 drop, 0.02 = 2% (retrain.max_regression).") var maxRegression: Double?
    @Option(help: "Work directory (retrain.work_dir).") var workDir: String?
    @Option(help: "Training epochs of the model's family (train.<family>.epochs).") var epochs: Int?
    @Option(help: "A config key, KEY=VALUE (repeatable), e.g. train.sasrec.max_length=50.") var set: [String] = []

    func run() async throws {
        common.startKernels(common.makeLogger("streamrec.retrain"))
        let outcome: RetrainOutcome = try await userFacing {
            var overrides: [String: String] = [:]
            overrides["model.registry"] = registry
            overrides["kafka.brokers"] = brokers
            overrides["kafka.input_topic"] = inputTopic
            overrides["retrain.window_hours"] = windowHours.map { String($0) }
            overrides["retrain.base_data"] = baseData
            overrides["retrain.model"] = model
            overrides["retrain.max_regression"] = maxRegression.map { String($0) }
            overrides["retrain.work_dir"] = workDir
            for pair in set {
                guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else { throw ValidationError("--set needs KEY=VALUE, got '\(pair)'") }
                overrides[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            var settings = try ConfigLoader.load(file: config, overrides: overrides)
            if let epochs {
                let family = try ModelCatalogue.standard.trainer(for: settings.retrain.model)
                overrides["train.\(family.name).epochs"] = String(epochs)
                settings = try ConfigLoader.load(file: config, overrides: overrides)
            }
            let job = RetrainJob(config: settings, logger: common.makeLogger("streamrec.retrain"))
            let printer = ProgressPrinter()
            job.onReadProgress = { done, total in printer.bar("reading \(settings.kafka.inputTopic)", done: done, total: total) }
            job.onTrainingProgress = printer.training
            job.onLog = printer.log
            return try await onDedicatedThread(name: "streamrec-retrain") { try job.run() }
        }
        print(String(format: "%@ %@: validation NDCG@10 %.4f vs current %@ (%@)", outcome.decision.rawValue, outcome.version,
                     outcome.candidateNDCG10, outcome.currentNDCG10.map { String(format: "%.4f", $0) } ?? "none",
                     outcome.previous ?? "no current version"))
        if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
    }
}
