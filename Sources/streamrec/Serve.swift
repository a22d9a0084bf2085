import ArgumentParser
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import StreamRecService

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a serving instance: consume interactions, keep sessions, publish recommendations.",
        discussion: "Settings come from --config FILE, then STREAMREC_* environment variables, then these flags. SIGTERM/SIGINT drain, flush, commit and leave the group."
    )

    @OptionGroup var common: CommonOptions
    @Option(help: "YAML config file (see docs/operations.md).") var config: String?
    @Option(help: "Kafka bootstrap servers, host:port[,host:port].") var brokers: String?
    @Option(help: "LevelDB state directory of this instance.") var state: String?
    @Option(help: "Model snapshot to serve.") var snapshot: String?
    @Option(help: "Model registry directory: serve its current version (unless --snapshot) and hot-reload promoted ones.") var registry: String?
    @Option(help: "Input topic.") var inputTopic: String?
    @Option(help: "Output topic.") var outputTopic: String?
    @Option(help: "Dead-letter topic.") var dlqTopic: String?
    @Option(help: "Consumer group id.") var group: String?
    @Option(help: "Sessions changelog topic (compacted, co-partitioned with the input).") var changelogTopic: String?
    @Option(help: "Stable name of this instance (static membership; transactional.id in exactly-once mode).") var instanceId: String?
    @Option(help: "at_least_once | exactly_once.") var delivery: String?
    @Option(help: "Warm standby copies of partitions owned elsewhere (0 = off).") var standbyReplicas: Int?
    @Option(help: "Items per recommendation.") var k: Int?
    @Option(help: "Metrics/health port (0 = any free port, -1 = off).") var metricsPort: Int?

    func run() async throws {
        try await userFacing {
            let logger = common.makeLogger("streamrec.serve")
            let kernels = common.startKernels(logger)
            var overrides: [String: String] = [:]
            overrides["kafka.brokers"] = brokers
            overrides["state.directory"] = state
            overrides["model.snapshot"] = snapshot
            overrides["model.registry"] = registry
            overrides["kafka.input_topic"] = inputTopic
            overrides["kafka.output_topic"] = outputTopic
            overrides["kafka.dlq_topic"] = dlqTopic
            overrides["kafka.group_id"] = group
            overrides["kafka.changelog_topic"] = changelogTopic
            overrides["kafka.instance_id"] = instanceId
            overrides["delivery"] = delivery
            overrides["state.standby_replicas"] = standbyReplicas.map(String.init)
            overrides["recommend.k"] = k.map(String.init)
            overrides["metrics.port"] = metricsPort.map(String.init)
            let settings = try ConfigLoader.load(file: config, overrides: overrides)

            let registry = PrometheusCollectorRegistry()
            let metrics = PipelineMetrics(factory: PrometheusMetricsFactory(registry: registry))
            metrics.recordKernels(core: kernels.core, libraryPick: kernels.libraryPick, source: kernels.source.rawValue)
            let stack = try ServingStack(config: settings, metrics: metrics, logger: logger)
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: PipelineService(stack: stack, logger: logger),
                      successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
            ]
            if let root = settings.model.registry {
                let watcher = ModelWatcher(stack: stack, registry: try ModelRegistry(root: root), metrics: metrics, logger: logger)
                services.append(.init(service: ModelWatcherService(watcher: watcher)))
            }
            if let ingestor = try ItemIngestor.fromConfig(stack: stack, metrics: metrics, logger: logger) {
                services.append(.init(service: ItemIngestorService(ingestor: ingestor)))
            }
            if settings.metrics.port >= 0 {
                let health = stack.pipeline.health
                services.append(.init(service: MetricsServer(host: settings.metrics.host, port: settings.metrics.port, registry: registry,
                                                             logger: logger, health: { health.problem(nowMs: Pipeline.nowMs()) })))
            }
            let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }
}
