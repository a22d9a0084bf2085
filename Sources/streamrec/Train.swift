import ArgumentParser
import Foundation
import StreamRecModels
import StreamRecService

/// `streamrec train`: any catalogue model from a dataset to a snapshot. The model's settings are
/// its `train.<family>.<key>` config keys: a flag `--max-length 50` is `train.sasrec.max_length`
/// for `--model sasrec`, and a config file (--config) or STREAMREC_TRAIN_SASREC_MAX_LENGTH mean
/// the same. `streamrec config keys` lists every key with its default.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model from interaction sequences and write a snapshot.",
        discussion: """
            Models: \(ModelCatalogue.standard.entries.map { "\($0.trainKinds.joined(separator: ", ")) (\($0.summary))" }.joined(separator: "; ")).
            Settings: any key of the model's family as a flag (--width 64, --loss ce, --lr 0.001) or as --set train.<family>.<key>=VALUE; \
            `streamrec config keys` lists them with their defaults. Values not given take the model's defaults. The neural models \
            write a checkpoint every epoch (OUT.ckpt) and resume from it with --resume; a report (OUT.report.md, OUT.report.svg) \
            lands beside the snapshot.
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "Model kind (see above).") var model: String = "transition"
    @Option(help: "Training data: a directory with sequences.txt, a sequences .txt, MovieLens ratings.dat, or user,item,timestamp .csv.") var data: String
    @Option(help: "Snapshot file to write.") var out: String
    @Option(help: "loo: hold out each user's last two items (validation and test targets) so `streamrec evaluate` is honest; none: train on everything (for serving).")
    var holdout: TrainingJob.Holdout = .loo
    @Option(help: "Item vectors: an embedding cache from `streamrec embed` (llmseqsim, llm2sasrec, diffurec*), or for diffurec* also a TSV item_id<TAB>v1 v2 ... (reduced to the width by PCA).") var embeddings: String?
    @Option(help: "YAML config file whose train.<family>.* keys set the model's settings.") var config: String?
    @Option(help: "A config key, KEY=VALUE (repeatable), e.g. train.sasrec.epochs=50.") var set: [String] = []
    @Option(help: "Checkpoint path (default OUT.ckpt).") var checkpoint: String?
    @Flag(help: "Continue from the checkpoint if it exists.") var resume = false
    @Argument(parsing: .allUnrecognized, help: .hidden) var settingFlags: [String] = []

    func run() throws {
        common.startKernels(common.makeLogger("streamrec.train"))
        let catalogue = ModelCatalogue.standard
        guard let family = catalogue.entry(forTrainKind: model) else {
            throw ValidationError("unknown model '\(model)'; known: \(catalogue.trainKinds.joined(separator: ", "))")
        }
        let overrides = try Self.overrides(set: set, flags: settingFlags, family: family)
        let start = Date()
        do throws(any Error) {
            let settings = try ConfigLoader.load(file: config, overrides: overrides)
            let values = settings.training[family.name] ?? [:]
            if let problem = family.check(values) {
                throw ConfigError(key: "train.\(family.name).\(problem.key)", source: "train", message: "\(problem.problem); set it with --\(problem.key.replacingOccurrences(of: "_", with: "-")) VALUE")
            }
            let dataset = try SequenceDataset.load(path: data)
            let printer = ProgressPrinter()
            // The source records the holdout, so `evaluate` can tell an honest snapshot from a leaky one.
            var job = TrainingJob(kind: model, dataset: dataset, holdout: holdout, source: "\(data) (holdout \(holdout.rawValue))")
            job.embeddings = embeddings
            job.checkpoint = checkpoint ?? out + ".ckpt"
            job.resume = resume
            job.progressInterval = printer.interval
            job.progress = printer.training
            job.log = printer.log
            let result = try family.train(job, settings: values)
            try ModelCatalogue.save(result.model, trainingSequences: job.trainingSequences, to: out)
            let wall = Date().timeIntervalSince(start)
            if !result.history.isEmpty {
                // Training time across resumes (sum of epoch wall times); this invocation's is printed too.
                let trained = result.history.reduce(0) { $0 + $1.seconds }
                let reportSettings = result.reportSettings.merging(["data": data, "holdout": holdout.rawValue]) { a, _ in a }
                try TrainingReport.markdown(model: model, snapshot: out, settings: reportSettings, history: result.history,
                                            metrics: [:], wallSeconds: trained).write(toFile: out + ".report.md", atomically: true, encoding: .utf8)
                try TrainingReport.svg(title: "\(model) on \(data)", history: result.history).write(toFile: out + ".report.svg", atomically: true, encoding: .utf8)
                print("\(result.summary), \(formatDuration(trained)) of training (this run \(formatDuration(wall))) -> \(out) (report: \(out).report.md)")
            } else {
                print(String(format: "%@ in %.2f s -> %@", result.summary, wall, out))
            }
        } catch let error as ModelError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// Config overrides from `--set KEY=VALUE` and from setting flags (`--max-length 50` or
    /// `--max-length=50`), which name keys of the model's family.
    static func overrides(set: [String], flags: [String], family: CatalogueEntry) throws -> [String: String] {
        var out: [String: String] = [:]
        for pair in set {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else { throw ValidationError("--set needs KEY=VALUE, got '\(pair)'") }
            out[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        var i = 0
        while i < flags.count {
            let flag = flags[i]
            guard flag.hasPrefix("--") else { throw ValidationError("unexpected argument '\(flag)'") }
            var name = String(flag.dropFirst(2)), value: String
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            } else {
                guard i + 1 < flags.count else { throw ValidationError("\(flag) needs a value") }
                value = flags[i + 1]
                i += 1
            }
            let key = name.replacingOccurrences(of: "-", with: "_")
            guard let setting = family.settingKeys.first(where: { $0.name == key || $0.aliases.contains(key) }) else {
                throw ValidationError("unknown option '\(flag)' for a \(family.name) model; its settings: \(family.settingKeys.map { "--" + $0.name.replacingOccurrences(of: "_", with: "-") }.joined(separator: " "))")
            }
            out["train.\(family.name).\(setting.name)"] = value
            i += 1
        }
        return out
    }
}

extension TrainingJob.Holdout: ExpressibleByArgument {}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s % 3600 / 60) : s >= 60 ? String(format: "%dm%02ds", s / 60, s % 60) : "\(s)s"
}
