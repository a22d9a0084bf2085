import ArgumentParser
import StreamRecService

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Configuration helpers.", subcommands: [Keys.self, Check.self])

    struct Keys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every config key with its environment variable.")
        func run() async throws {
            for key in ConfigLoader.documentedKeys {
                print("\(key.name.padding(toLength: 34, withPad: " ", startingAt: 0)) \(ConfigLoader.environmentName(key.name).padding(toLength: 42, withPad: " ", startingAt: 0)) \(key.doc)")
            }
            print("kafka.consumer / kafka.producer     (file only)                                maps of extra librdkafka properties")
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a config file (and the environment) without starting anything.")
        @Argument(help: "YAML config file.") var file: String
        func run() async throws {
            try await userFacing {
                let c = try ConfigLoader.load(file: file)
                print("ok: brokers=\(c.kafka.brokers ?? "(unset)") input=\(c.kafka.inputTopic) output=\(c.kafka.outputTopic) group=\(c.kafka.groupID) state=\(c.state.directory) k=\(c.recommend.k) exclude=\(c.recommend.exclude)")
            }
        }
    }
}
