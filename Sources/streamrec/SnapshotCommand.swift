import ArgumentParser
import Foundation
import StreamRecModels

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshot", abstract: "Model snapshot files.", subcommands: [Inspect.self])

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a snapshot (magic, version, checksum, vocabulary, tensors) and print its manifest.")
        @Argument(help: "Snapshot file.") var path: String
        @Flag(help: "Print the manifest as JSON (without the item list).") var json = false

        func run() async throws {
            try await userFacing {
                let snapshot = try Snapshot.read(path: path)
                var m = snapshot.manifest
                if json {
                    m.items = []
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(decoding: try encoder.encode(m), as: UTF8.self))
                    return
                }
                print("snapshot   \(path) (verified)")
                print("model      \(m.kind) version \(m.modelVersion)")
                print("created    \(m.createdAt) by \(m.codeVersion)")
                print("items      \(m.items.count) (hash \(m.itemsHash))")
                print("training   \(m.training.users) sequences, \(m.training.interactions) interactions from \(m.training.source)")
                print("settings   " + m.hyperParameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
                if !m.metrics.isEmpty {
                    print("metrics    " + m.metrics.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(format: "%.4f", $0.value))" }.joined(separator: " "))
                }
                for t in m.tensors {
                    print("tensor     \(t.name) \(t.dtype) \(t.shape) (\(t.length) bytes)")
                }
            }
        }
    }
}
