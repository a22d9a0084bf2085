import ArgumentParser
import Foundation
import Prometheus
import ServiceLifecycle
import StreamRecService

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that every input record has an answer or a dead letter (output continuity).",
        discussion: "Reads the output and dead-letter topics and matches their source partition and offset against the input topic. Runs as a service exporting streamrec_output_missing on /metrics (the continuity alert reads it), or with --once reads to the end, prints a JSON report and exits 1 when any input has no output."
    )

    @OptionGroup var common: CommonOptions
    @Option(help: "YAML config file: the topic names and brokers of the service.") var config: String?
    @Option(help: "Kafka bootstrap servers.") var brokers: String?
    @Option(help: "Input topic.") var inputTopic: String?
    @Option(help: "Output topic.") var outputTopic: String?
    @Option(help: "Dead-letter topic.") var dlqTopic: String?
    @Option(help: "Judge input records from this time on (ms since the epoch); default: the input's earliest retained record. Keep it inside the output topic's retention.") var sinceMs: Int64?
    @Option(help: "Seconds an input offset may wait for its answer before it counts as missing.") var graceSeconds: Double = 30
    @Flag(help: "Read as a read_committed consumer (what an exactly-once downstream sees).") var readCommitted = false
    @Flag(help: "Read to the end, print a JSON report, exit 1 if anything is missing.") var once = false
    @Option(help: "Metrics port (0 = any free port, -1 = off).") var metricsPort: Int?

    func run() async throws {
        try await userFacing {
            let logger = common.makeLogger("streamrec.audit")
            var overrides: [String: String] = [:]
            overrides["kafka.brokers"] = brokers
            overrides["kafka.input_topic"] = inputTopic
            overrides["kafka.output_topic"] = outputTopic
            overrides["kafka.dlq_topic"] = dlqTopic
            overrides["metrics.port"] = metricsPort.map(String.init)
            let settings = try ConfigLoader.load(file: config, overrides: overrides)
            var options = OutputAudit.Options(brokers: settings.kafka.brokers ?? "", inputTopic: settings.kafka.inputTopic,
                                              outputTopic: settings.kafka.outputTopic, dlqTopic: settings.kafka.dlqTopic)
            options.sinceMs = sinceMs
            options.graceSeconds = graceSeconds
            options.readCommitted = readCommitted
            let registry = PrometheusCollectorRegistry()
            let audit = try OutputAudit(options: options, factory: PrometheusMetricsFactory(registry: registry), logger: logger)
            if once {
                let report = try await onDedicatedThread(name: "audit") { try audit.runOnce() }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
                if report.missing > 0 { throw ExitCode(1) }
                return
            }
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: OutputAuditService(audit: audit))]
            if settings.metrics.port >= 0 {
                services.append(.init(service: MetricsServer(host: settings.metrics.host, port: settings.metrics.port, registry: registry,
                                                             logger: logger, health: { nil })))
            }
            try await ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)).run()
        }
    }
}
