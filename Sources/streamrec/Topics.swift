import ArgumentParser
import Foundation
import StreamRecKafka
import StreamRecService

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage the topics of topology/topics.yaml.", subcommands: [Apply.self])

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create missing topics and report what differs from the declaration.")
        @OptionGroup var common: CommonOptions
        @Option(help: "Kafka bootstrap servers.") var brokers: String
        @Option(help: "Topology file.") var topology: String = "topology/topics.yaml"
        @Option(help: "Cap the replication factor (a small dev cluster).") var maxReplication: Int?

        func run() async throws {
            try await userFacing {
                let topo = try Topology.load(path: topology)
                let report = try await onDedicatedThread(name: "topics-apply") { () throws -> [String] in
                    let admin = try KafkaAdmin(brokers: brokers, properties: ["log_level": "3"])
                    defer { admin.close() }
                    return try topo.apply(admin: admin, replicationCap: maxReplication)
                }
                for line in report { print(line) }
                print("consumer group: \(topo.consumerGroup) (joined by `streamrec serve --group \(topo.consumerGroup)`)")
                if report.contains(where: { $0.hasPrefix("FAILED") }) { throw ExitCode(1) }
            }
        }
    }
}
