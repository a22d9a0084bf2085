import ArgumentParser
import Foundation
import Logging

@main
struct StreamRecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streamrec",
        abstract: "A Kafka-fed streaming sequential recommender.",
        discussion: "Start with `streamrec demo` (no broker needed). Docs: README.md and docs/.",
        subcommands: [Serve.self, Demo.self, Train.self, Evaluate.self, Embed.self, Bench.self, Inspect.self, Topics.self, Replay.self, Audit.self, ConfigCommand.self, SnapshotCommand.self, Models.self, Retrain.self, Doctor.self, KernelCheck.self]
    )
}

/// Options every command shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return logger
    }
}

/// Prints a clear one-line error for the errors users can fix, instead of a stack of types.
func userFacing<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        // Argument-parser errors and exit codes keep their own handling.
        if error is ExitCode || error is CleanExit || error is ValidationError { throw error }
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(2)
    }
}
