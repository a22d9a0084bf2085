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

    func run() async throws {
        try await userFacing {
            guard model == "transition" else {
                throw ValidationError("unknown model '\(model)'; available now: transition")
            }
            let start = Date()
            let dataset = try SequenceDataset.load(path: data)
            var config = TransitionConfig()
            config.successorsPerItem = successors
            let trained = TransitionModel.train(sequences: dataset.sequences.map(\.items), config: config, source: data)
            try trained.save(to: out)
            let interactions = dataset.sequences.reduce(0) { $0 + $1.items.count }
            print(String(format: "trained %@ on %d sequences (%d interactions) in %.2f s -> %@",
                         model, dataset.sequences.count, interactions, Date().timeIntervalSince(start), out))
        }
    }
}
