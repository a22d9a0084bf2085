import ArgumentParser
import Foundation
import StreamRecModels
import StreamRecService

/// `streamrec models ...`: the model registry (docs/operations.md, "Model registry").
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "The model registry: publish, list, show, promote, roll back, prune.",
        discussion: "The registry is a directory (--registry or the config key model.registry). promote and rollback with --brokers also announce the new current version on the model-updates topic, which running `serve` instances follow.",
        subcommands: [List.self, Current.self, Show.self, Publish.self, Promote.self, Rollback.self, Prune.self, Compare.self])

    struct RegistryOptions: ParsableArguments {
        @Option(help: "Registry directory (config key model.registry).") var registry: String?
        @Option(help: "YAML config file (model.registry, model.name, kafka.* for announcements).") var config: String?

        func settings(brokers: String? = nil, topic: String? = nil, name: String? = nil) throws -> StreamRecConfig {
            var overrides: [String: String] = [:]
            overrides["model.registry"] = registry
            overrides["kafka.brokers"] = brokers
            overrides["kafka.model_updates_topic"] = topic
            overrides["model.name"] = name
            return try ConfigLoader.load(file: config, overrides: overrides)
        }

        func open(_ settings: StreamRecConfig, create: Bool = false) throws -> ModelRegistry {
            guard let root = settings.model.registry else {
                throw ValidationError("no registry: pass --registry DIR (or set model.registry in --config FILE / STREAMREC_MODEL_REGISTRY)")
            }
            return try ModelRegistry(root: root, create: create)
        }
    }

    struct AnnounceOptions: ParsableArguments {
        @Option(help: "Kafka bootstrap servers: also announce the new current version on the model-updates topic.") var brokers: String?
        @Option(help: "Announcement topic (config key kafka.model_updates_topic, default model-updates).") var topic: String?
        @Option(help: "Model name, the announcement key (config key model.name, default \"default\").") var name: String?

        /// Announces `version` when --brokers was given; the pointer has already moved.
        func announce(_ version: String, action: String, registry: ModelRegistry, settings: StreamRecConfig) async throws {
            guard brokers != nil, let servers = settings.kafka.brokers else { return }
            let announcement = ModelAnnouncement(registry: registry, manifest: try registry.show(version), action: action)
            let topic = settings.kafka.modelUpdatesTopic, name = settings.model.name
            let properties = settings.kafka.producerProperties
            try await onDedicatedThread(name: "models-announce") {
                try ModelAnnouncer.announce(announcement, name: name, brokers: servers, topic: topic, properties: properties)
            }
            print("announced \(version) on \(topic) (key \(name))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List versions, oldest first (* current, < what rollback returns to).")
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            try await userFacing {
                let registry = try options.open(try options.settings())
                let current = try registry.currentVersion()
                let previous = try registry.previousVersion()
                let entries = try registry.list()
                if entries.isEmpty { print("no versions in \(registry.root.path)"); return }
                print("  version        kind        published                 parent         data window / metrics")
                for e in entries {
                    let mark = e.version == current ? "*" : e.version == previous ? "<" : " "
                    // The gate's figures first when present, else whatever the snapshot recorded.
                    let preferred = ["validation_ndcg@10", "validation_hr@10", "test_ndcg@10", "test_hr@10"].filter { e.metrics[$0] != nil }
                    let keys = preferred.isEmpty ? Array(e.metrics.keys.sorted().prefix(2)) : preferred
                    let metrics = keys.map { "\($0)=\(String(format: "%.4f", e.metrics[$0]!))" }.joined(separator: " ")
                    let detail = [e.dataWindow, metrics.isEmpty ? nil : metrics].compactMap { $0 }.joined(separator: "  ")
                    print("\(mark) \(pad(e.version, 14)) \(pad(e.kind, 11)) \(pad(e.publishedAt, 25)) \(pad(e.parent ?? "-", 14)) \(detail)")
                }
            }
        }
    }

    struct Current: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the current version (for scripts); exit 1 if none was promoted yet.")
        @OptionGroup var options: RegistryOptions

        func run() async throws {
            try await userFacing {
                let registry = try options.open(try options.settings())
                guard let current = try registry.currentVersion() else {
                    FileHandle.standardError.write(Data("no current version in \(registry.root.path)\n".utf8))
                    throw ExitCode(1)
                }
                print(current)
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a version's manifest as JSON (or one metric).")
        @OptionGroup var options: RegistryOptions
        @Argument(help: "Version (or 'current').") var version: String
        @Option(help: "Print only this metric's value (e.g. validation_ndcg@10); exit 1 if it is absent.") var metric: String?

        func run() async throws {
            try await userFacing {
                let registry = try options.open(try options.settings())
                let entry = try resolve(version, in: registry)
                if let metric {
                    guard let value = entry.metrics[metric] else {
                        FileHandle.standardError.write(Data("error: version \(entry.version) has no metric '\(metric)' (has: \(entry.metrics.keys.sorted().joined(separator: ", ")))\n".utf8))
                        throw ExitCode(1)
                    }
                    print(value)
                    return
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(entry), as: UTF8.self))
            }
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a verified snapshot into the registry as a new immutable version; prints the version.",
            discussion: "The version is the snapshot's model version (a content hash), so publishing the same model again is a no-op. Publishing does not serve it: promote does.")
        @OptionGroup var options: RegistryOptions
        @Option(help: "Snapshot file to publish.") var snapshot: String
        @Option(help: "Parent version (default: the current one).") var parent: String?
        @Option(help: "Data window the model was trained on, free text (e.g. 2026-11-16..2026-11-22).") var dataWindow: String?
        @Option(help: "`streamrec evaluate` JSON report(s) whose figures go into the manifest as <split>_hr@K, <split>_ndcg@K, <split>_mrr.")
        var metrics: [String] = []

        func run() async throws {
            try await userFacing {
                let registry = try options.open(try options.settings(), create: true)
                var extra: [String: Double] = [:]
                for file in metrics { extra.merge(try evaluationMetrics(file)) { _, new in new } }
                let entry = try registry.publish(snapshotPath: snapshot, parent: parent, dataWindow: dataWindow, metrics: extra)
                FileHandle.standardError.write(Data("published \(entry.version) (\(entry.kind), parent \(entry.parent ?? "none")) -> \(registry.snapshotPath(of: entry.version))\n".utf8))
                print(entry.version)
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a version current (verified first); with --brokers, announce it to running services.")
        @OptionGroup var options: RegistryOptions
        @OptionGroup var announce: AnnounceOptions
        @Argument(help: "Version to serve.") var version: String

        func run() async throws {
            try await userFacing {
                let settings = try options.settings(brokers: announce.brokers, topic: announce.topic, name: announce.name)
                let registry = try options.open(settings)
                let previous = try registry.promote(version)
                print("current: \(version) (was \(previous ?? "none"))")
                try await announce.announce(version, action: "promote", registry: registry, settings: settings)
            }
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Return to the version that was current before the current one was promoted; with --brokers, announce it.")
        @OptionGroup var options: RegistryOptions
        @OptionGroup var announce: AnnounceOptions

        func run() async throws {
            try await userFacing {
                let settings = try options.settings(brokers: announce.brokers, topic: announce.topic, name: announce.name)
                let registry = try options.open(settings)
                let (from, to) = try registry.rollback()
                print("current: \(to) (rolled back from \(from))")
                try await announce.announce(to, action: "rollback", registry: registry, settings: settings)
            }
        }
    }

    struct Prune: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete all but the N most recently published versions (never the current one or its predecessor).")
        @OptionGroup var options: RegistryOptions
        @Option(help: "Versions to keep.") var keep: Int

        func run() async throws {
            try await userFacing {
                let registry = try options.open(try options.settings())
                let deleted = try registry.prune(keep: keep)
                print(deleted.isEmpty ? "nothing to delete" : "deleted \(deleted.joined(separator: " "))")
            }
        }
    }

    struct Compare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Promotion gate: exit 0 if a version's metric is not worse than the baseline's by more than --max-drop-pct, else 1.",
            discussion: "The baseline is the current version's manifest metric, or --baseline-eval (a `streamrec evaluate` JSON of the current model on the same data, the fairer comparison). No baseline (first version) passes.")
        @OptionGroup var options: RegistryOptions
        @Argument(help: "Candidate version.") var version: String
        @Option(help: "Metric name (higher is better).") var metric: String = "validation_ndcg@10"
        @Option(help: "Largest allowed relative drop, percent.") var maxDropPct: Double = 2
        @Option(help: "Baseline from this `streamrec evaluate` JSON instead of the current version's manifest.") var baselineEval: String?

        func run() async throws {
            try await userFacing {
                let registry = try options.open(try options.settings())
                let candidate = try resolve(version, in: registry)
                guard let value = candidate.metrics[metric] else {
                    throw ValidationError("version \(candidate.version) has no metric '\(metric)'; publish it with --metrics EVAL.json (from `streamrec evaluate --split validation`)")
                }
                var baseline: Double? = nil
                var baselineName = "none"
                if let baselineEval {
                    baseline = try evaluationMetrics(baselineEval)[metric]
                    baselineName = baselineEval
                    if baseline == nil { throw ValidationError("\(baselineEval) has no '\(metric)'") }
                } else if let current = try registry.current(), current.version != candidate.version {
                    baseline = current.metrics[metric]
                    baselineName = "current \(current.version)"
                }
                guard let baseline else {
                    print("pass: \(metric) \(value) (no baseline)")
                    return
                }
                let floor = baseline * (1 - maxDropPct / 100)
                let verdict = value >= floor ? "pass" : "FAIL"
                print(String(format: "%@: %@ %.4f vs %.4f (%@), floor %.4f (max drop %.1f%%)", verdict, metric, value, baseline, baselineName, floor, maxDropPct))
                if value < floor { throw ExitCode(1) }
            }
        }
    }
}

/// Figures of a `streamrec evaluate` JSON report (protocol "all") as manifest metrics.
func evaluationMetrics(_ file: String) throws -> [String: Double] {
    let report: EvaluationReport
    do {
        report = try JSONDecoder().decode(EvaluationReport.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
    } catch {
        throw ValidationError("\(file) is not a `streamrec evaluate` JSON report (\(error.localizedDescription)); pass the file written by `streamrec evaluate --json`")
    }
    var metrics: [String: Double] = ["\(report.split)_mrr": report.all.mrr]
    for c in report.all.cutoffs {
        metrics["\(report.split)_hr@\(c.k)"] = c.hitRate
        metrics["\(report.split)_ndcg@\(c.k)"] = c.ndcg
    }
    return metrics
}

private func resolve(_ version: String, in registry: ModelRegistry) throws -> RegistryManifest {
    if version == "current" {
        guard let current = try registry.current() else { throw RegistryError(.notFound, "\(registry.root.path) has no current version; promote one") }
        return current
    }
    return try registry.show(version)
}

private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s.padding(toLength: n, withPad: " ", startingAt: 0) }
