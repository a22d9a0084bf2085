import ArgumentParser
import Foundation
import StreamRecModels

struct Train: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model from interaction sequences and write a snapshot.")

    @OptionGroup var common: CommonOptions
    @Option(help: "Model kind: transition.") var model: String = "transition"
    @Option(help: "Training data: a directory with sequences.txt, a sequences .txt, MovieLens ratings.dat, or user,item,timestamp .csv.") var data: String
    @Option(help: "Snapshot file to write.") var out: String
    @Option(help: "Successors kept per item (transition).") var successors: Int = 50
    @Option(help: "loo: hold out each user's last two items (validation and test targets) so `streamrec evaluate` is honest; none: train on everything (for serving).")
    var holdout: Holdout = .loo

    enum Holdout: String, ExpressibleByArgument, CaseIterable {
        case loo, none
    }

    func run() async throws {
        try await userFacing {
            guard model == "transition" else {
                throw ValidationError("unknown model '\(model)'; available now: transition")
            }
            let start = Date()
            let dataset = try SequenceDataset.load(path: data)
            // Users with fewer than 3 items have no targets and are kept whole by leaveOneOut.
            let sequences = holdout == .loo ? dataset.leaveOneOut().train : dataset.sequences.map(\.items)
            var config = TransitionConfig()
            config.successorsPerItem = successors
            // The source records the holdout, so `evaluate` can tell an honest snapshot from a leaky one.
            let trained = TransitionModel.train(sequences: sequences, config: config, source: "\(data) (holdout \(holdout.rawValue))")
            try trained.save(to: out)
            let interactions = sequences.reduce(0) { $0 + $1.count }
            print(String(format: "trained %@ on %d sequences (%d interactions, holdout %@) in %.2f s -> %@",
                         model, sequences.count, interactions, holdout.rawValue, Date().timeIntervalSince(start), out))
        }
    }
}
