import ArgumentParser
import Foundation
import StreamRecService

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole job on an embedded Kafka cluster: synthetic clicks in, live recommendations out, then a summary."
    )

    @OptionGroup var common: CommonOptions
    @Option(help: "Model served: any kind `streamrec train` knows that needs no text embeddings (sasrec, transition, diffurec, ...).") var model: String = "sasrec"
    @Option(help: "SASRec training epochs.") var epochs: Int = 25
    @Option(help: "Synthetic users.") var users: Int = 2000
    @Option(help: "Events per user.") var eventsPerUser: Int = 30
    @Option(help: "Input rate of the latency phase, events/s.") var rate: Int = 2000
    @Option(help: "Random seed of the synthetic clickstream.") var seed: UInt64 = 7
    @Option(help: "Topology file.") var topology: String = "topology/topics.yaml"
    @Option(help: "Metrics/health port while the demo runs (-1 = off).") var metricsPort: Int = -1
    @Option(help: "at_least_once or exactly_once (one Kafka transaction per micro-batch).") var delivery: String = "at_least_once"

    func run() async throws {
        try await userFacing {
            var logger = common.makeLogger("streamrec.demo")
            if common.logLevel == "info" { logger.logLevel = .warning }   // the demo's own lines tell the story
            print(KernelStartup.establish(logger: logger).startLine)
            routeKafkaLogs(to: logger)
            var options = DemoOptions()
            options.model = model
            options.epochs = epochs
            options.users = users
            options.eventsPerUser = eventsPerUser
            options.rate = rate
            options.seed = seed
            options.topologyPath = topology
            options.metricsPort = metricsPort
            guard let mode = DeliveryMode(rawValue: delivery) else {
                throw ValidationError("--delivery must be at_least_once or exactly_once, got '\(delivery)'")
            }
            options.delivery = mode
            let s = try await StreamRecService.Demo.run(options: options, logger: logger) { line in print(line) }
            print("")
            print("summary")
            print(String(format: "  throughput      %8.0f events/s  (backlog of %d events)", s.eventsPerSecond, s.backlogEvents))
            print(String(format: "  latency         p50 %.1f ms, p99 %.1f ms  (event sent -> answer read, at %.0f events/s, %d events)",
                         s.latencyP50Ms, s.latencyP99Ms, s.pacedRate, s.pacedEvents))
            print(String(format: "                  p50 %.1f ms sent -> answer produced, %.1f ms produced -> answer read",
                         s.inboundP50Ms, s.outboundP50Ms))
            print(String(format: "  HR@10 next event %.3f  (popularity baseline %.3f; %d answers scored)", s.hitRate10, s.popularityHitRate10, s.hitTrials))
            print(String(format: "  recommendations %8d for %d streamed events; trained on %d; wall time %.1f s",
                         s.recommendations, s.streamed, s.trainedOn, s.wallSeconds))
            let busy = s.stages.filter { $0.stage != "poll" }.reduce(0) { $0 + $1.seconds }
            print(String(format: "  pipeline        %d micro-batches, %.0f records each on average; busy %.2f s: %@; in poll %.2f s",
                         s.batches, Double(s.batchRecords) / Double(max(s.batches, 1)), busy,
                         s.stages.filter { $0.stage != "poll" }.map { String(format: "%@ %.0f%%", $0.stage, 100 * $0.seconds / max(busy, 1e-9)) }.joined(separator: ", "),
                         s.stages.first { $0.stage == "poll" }?.seconds ?? 0))
        }
    }
}
