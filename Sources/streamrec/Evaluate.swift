import ArgumentParser
import Foundation
import StreamRecModels

struct Evaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rank each user's held-out item against the whole catalogue and report HR, NDCG, MRR, coverage and serendipity.",
        discussion: "Leave-one-out: the last item of each user is the test target, the one before it the validation target. Both protocols (all items; history excluded) are reported side by side. See docs/evaluation.md.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Snapshot to evaluate (its manifest kind picks the model).") var snapshot: String?
    @Option(help: "Evaluate a model built without training instead of a snapshot: popularity, or llmseqsim (with --embeddings).") var model: String?
    @Option(help: "Embedding cache for --model llmseqsim (`streamrec embed`).") var embeddings: String?
    @Option(help: "LLMSeqSim session embedding: mean, or decay (recency-weighted).") var aggregation: String = "mean"
    @Option(help: "LLMSeqSim decay: items after which a weight halves.") var halfLife: Double = 3
    @Option(help: "Dataset: a directory with sequences.txt, a sequences .txt, MovieLens ratings.dat, or user,item,timestamp .csv.") var data: String
    @Option(help: "Which held-out item to rank: test or validation.") var split: EvaluationSplit = .test
    @Option(help: "Where to write the JSON report (default: beside the snapshot as SNAPSHOT.eval.json; none for a baseline).") var json: String?
    @Option(help: "Sessions scored per batch.") var batch: Int = 256
    @Option(help: "Evaluate only N evenly spaced users (the same N for every model: paired comparisons at a fraction of the cost); default all.") var users: Int?
    @Option(help: "Diffusion snapshots: reverse steps K to sample with (default: the snapshot's).") var sampleSteps: Int?
    @Option(help: "Diffusion snapshots: seeded runs S to average (default: the snapshot's).") var seeds: Int?

    func validate() throws {
        if let model, model != PopularityScorer.kind, model != LLMSeqSim.kind {
            throw ValidationError("unknown baseline '\(model)'; available: \(PopularityScorer.kind), \(LLMSeqSim.kind) (models with a snapshot are evaluated with --snapshot)")
        }
        if model == LLMSeqSim.kind, embeddings == nil { throw ValidationError("--model llmseqsim needs --embeddings CACHE (see `streamrec embed`)") }
        guard LLMSeqSimConfig.Aggregation(rawValue: aggregation) != nil, halfLife > 0 else {
            throw ValidationError("--aggregation must be mean or decay and --half-life positive")
        }
        if (snapshot == nil) == (model == nil) {
            throw ValidationError("pass either --snapshot PATH or --model \(PopularityScorer.kind)")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
        if let users, users < 1 { throw ValidationError("--users must be at least 1, got \(users)") }
        if let sampleSteps, sampleSteps < 1 { throw ValidationError("--sample-steps must be at least 1, got \(sampleSteps)") }
        if let seeds, seeds < 1 { throw ValidationError("--seeds must be at least 1, got \(seeds)") }
        // Checked before the evaluation runs, so a typo does not cost a whole run.
        if let json {
            let directory = URL(fileURLWithPath: json).deletingLastPathComponent().path
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--json \(json): the directory \(directory) does not exist")
            }
        }
    }

    func run() async throws {
        common.startKernels(common.makeLogger("streamrec.evaluate"))
        try await userFacing {
            let dataset = try SequenceDataset.load(path: data)
            let leaveOneOut = dataset.leaveOneOut()
            var cases = leaveOneOut.cases(for: split)
            if let users, users < cases.count {
                // Evenly spaced, so a subset run ranks the same users for every model and sampler.
                let all = cases
                cases = (0..<users).map { all[$0 * all.count / users] }
                print("evaluating \(users) of \(all.count) users (evenly spaced)")
            }
            guard !cases.isEmpty else {
                throw ModelError(.badData, "\(data): no user has the 3 or more items leave-one-out needs; nothing to evaluate")
            }
            let catalogItems = Set(dataset.sequences.lazy.flatMap(\.items)).count

            let scorer: any CatalogScorer
            let descriptor: ModelDescriptor
            if let snapshot {
                let file = try Snapshot.read(path: snapshot)
                var loaded = try loadScorer(snapshot: file)
                var version = file.manifest.modelVersion
                if sampleSteps != nil || seeds != nil {
                    guard let diffusion = loaded as? DiffuRec else {
                        throw ValidationError("--sample-steps and --seeds apply to diffusion snapshots only; \(snapshot) is '\(file.manifest.kind)'")
                    }
                    let sampler = DiffuRecSamplerScorer(model: diffusion, sampleSteps: sampleSteps ?? diffusion.config.sampleSteps,
                                                        seeds: seeds ?? diffusion.config.seeds)
                    loaded = sampler
                    version += " (K=\(sampler.sampleSteps), S=\(sampler.seeds.count))"
                    print("sampler: K = \(sampler.sampleSteps) of T = \(diffusion.config.steps) steps, S = \(sampler.seeds.count) seeds")
                }
                scorer = loaded
                descriptor = ModelDescriptor(name: file.manifest.kind, version: version)
                if !file.manifest.training.source.hasSuffix("(holdout loo)") {
                    FileHandle.standardError.write(Data("warning: \(snapshot) was not trained with `--holdout loo` (source: \(file.manifest.training.source)); if it saw these targets, the figures are inflated\n".utf8))
                }
            } else if model == LLMSeqSim.kind {
                let cache = try EmbeddingCache.load(path: embeddings!)
                let config = LLMSeqSimConfig(aggregation: LLMSeqSimConfig.Aggregation(rawValue: aggregation)!, halfLife: halfLife)
                let sim = LLMSeqSim.build(cache: cache, items: Array(Set(dataset.sequences.lazy.flatMap(\.items))).sorted(), config: config)
                scorer = sim
                descriptor = ModelDescriptor(name: LLMSeqSim.kind, version: aggregation == "mean" ? "mean" : "decay-\(halfLife)")
            } else {
                scorer = PopularityScorer(sequences: leaveOneOut.train)
                descriptor = ModelDescriptor(name: PopularityScorer.kind, version: "")
            }

            let report = FullRankingEvaluator(batchSize: batch).evaluate(
                scorer: scorer, cases: cases, trainingSequences: leaveOneOut.train, catalogItemCount: catalogItems,
                model: descriptor, dataset: data, split: split.rawValue)
            print(report.table())

            guard let output = json ?? snapshot.map({ $0 + ".eval.json" }) else { return }
            do {
                try report.json().write(to: URL(fileURLWithPath: output), options: .atomic)
            } catch {
                throw ModelError(.badData, "cannot write the report to \(output): \(error.localizedDescription)")
            }
            print("report -> \(output)")
        }
    }
}

extension EvaluationSplit: ExpressibleByArgument {}
