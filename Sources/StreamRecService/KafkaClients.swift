// Every Kafka client StreamRec runs, configured in one place from the typed config (the config
// file's kafka.consumer / kafka.producer maps override them last), and librdkafka's own log
// lines routed to swift-log.
import Foundation
import Logging
import StreamRecKafka

enum KafkaClients {
    /// What every consumer of this deployment shares.
    private static func consumerBase(_ config: StreamRecConfig, brokers: String) -> KafkaClientConfig {
        var c = KafkaClientConfig(brokers: brokers)
        c.clientID = config.kafka.clientID
        c.offsetReset = .earliest
        c.overrides = config.kafka.consumerProperties
        return c
    }

    /// A consumer that never joins or commits (assign() only); librdkafka still wants a group
    /// id, so it gets a private one and the serving group stays untouched.
    private static func reader(_ config: StreamRecConfig, brokers: String, purpose: String, unique: Bool = true) -> KafkaClientConfig {
        var c = consumerBase(config, brokers: brokers)
        c.groupID = "\(config.kafka.groupID)-\(purpose)" + (unique ? "-\(UUID().uuidString.prefix(8))" : "")
        c.autoCommit = false
        c.fetchWaitMaxMs = 100
        c.logLevel = 3
        // Even if kafka.consumer says otherwise: a reader must not join or commit for the group.
        for key in ["group.id", "group.instance.id", "enable.auto.commit"] { c.overrides.removeValue(forKey: key) }
        return c
    }

    /// The serving consumer (group member).
    static func consumer(_ config: StreamRecConfig, brokers: String) -> KafkaClientConfig {
        var c = consumerBase(config, brokers: brokers)
        c.groupID = config.kafka.groupID
        c.assignor = config.kafka.assignor
        // A crashed instance's partitions move after this long; the default 45 s is slow for a stream.
        c.sessionTimeoutMs = 10_000
        // A survivor learns of a rebalance at its next heartbeat, so failover waits up to one
        // interval past the session timeout (Apache Kafka); 1 s keeps that within the 2 s budget.
        c.heartbeatIntervalMs = 1_000
        c.fetchWaitMaxMs = 50
        // Nagle held small fetches and produce requests 40 ms a round (the demo's p50 was 40-48 ms).
        c.disableNagle = true
        if let instance = config.kafka.instanceID, config.kafka.staticMembership {
            // Static membership: a restart within session.timeout.ms keeps its partitions (no
            // rebalance), and assignors order members by this name, so a restarted instance gets
            // the same partitions back after a rebalance too.
            c.groupInstanceID = instance
        }
        if config.delivery == .exactlyOnce { c.isolation = .readCommitted }
        return c
    }

    /// The serving producer; transactional in exactly-once mode.
    static func producer(_ config: StreamRecConfig, brokers: String) -> KafkaClientConfig {
        var c = KafkaClientConfig(brokers: brokers)
        c.clientID = config.kafka.clientID
        // Idempotence keeps per-partition order through retries (output order per user).
        c.idempotent = true
        c.lingerMs = 1
        // One request in flight per broker: a micro-batch is sent whole and then awaited, so a
        // broker gets one produce request per batch anyway. With several in flight, librdkafka
        // 2.0.2 against its mock brokers stalls 40 ms a batch in most runs (responses held back by
        // Nagle on the broker side): demo p50 40-48 ms, 13 ms with one.
        c.maxInFlight = 1
        c.disableNagle = true
        if config.delivery == .exactlyOnce, let instance = config.kafka.instanceID {
            // One transactional.id per instance: init_transactions fences a zombie of the same
            // instance; the consumer group generation sent with the offsets fences the others.
            c.transactionalID = "\(config.kafka.groupID).\(instance)"
            c.transactionTimeoutMs = config.kafka.transactionTimeoutMs
        }
        c.overrides = config.kafka.producerProperties
        return c
    }

    /// The changelog readers: a restore's (`standby: false`) and the standby tail's. Exactly-once
    /// reads whole transactions only; at-least-once reads as `state.changelog_isolation` says
    /// (read_committed by default; tansu 0.6 needs read_uncommitted: its read_committed fetches
    /// stopped below the high watermark and stalled a restore for good, docs/operations.md).
    static func changelogReader(_ config: StreamRecConfig, brokers: String, standby: Bool) -> KafkaClientConfig {
        var c = consumer(config, brokers: brokers)
        c.groupID = "\(config.kafka.groupID)-restore"
        c.groupInstanceID = nil
        c.isolation = config.delivery == .exactlyOnce ? .readCommitted : config.state.changelogIsolation
        c.fetchMaxBytes = 52_428_800
        c.maxPartitionFetchBytes = 8_388_608
        if standby {
            // A standby tails partitions nobody waits on: librdkafka's default wait, not the
            // serving consumer's 50 ms. Each empty fetch costs tansu an S3 listing per partition,
            // and 50 ms standbys of three instances kept moto busy enough to slow a restore to
            // one batch every few seconds.
            c.fetchWaitMaxMs = 500
        } else {
            // A restore drains prefetched records faster than librdkafka refills them once
            // 100,000 (its default) are queued: fetching pauses, and polls came back empty for
            // 2.1 s of a 3.3 s restore (300,000 sessions, 64 partitions). The reader lives only
            // for the restore.
            c.queuedMinMessages = 1_000_000
        }
        return c
    }

    /// The `items` topic reader of the cold-start path.
    static func itemsReader(_ config: StreamRecConfig, brokers: String) -> KafkaClientConfig {
        reader(config, brokers: brokers, purpose: "items")
    }

    /// The model-updates reader of the hot-reload watcher.
    static func modelUpdatesReader(_ config: StreamRecConfig, brokers: String) -> KafkaClientConfig {
        reader(config, brokers: brokers, purpose: "model-watch")
    }

    /// Retrain's reader of the input topic.
    static func retrainReader(_ config: StreamRecConfig, brokers: String) -> KafkaClientConfig {
        var c = reader(config, brokers: brokers, purpose: "retrain")
        c.clientID = "\(config.kafka.clientID)-retrain"
        return c
    }

    /// Retrain's announcer of a promoted version.
    static func announcer(brokers: String, overrides: [String: String]) -> KafkaClientConfig {
        var c = KafkaClientConfig(brokers: brokers)
        c.idempotent = true
        c.logLevel = 3
        c.overrides = overrides
        return c
    }

    /// A tool's or benchmark's reader of an output topic (`audit`, the demo, the swap benchmark).
    static func outputReader(brokers: String, group: String, isolation: KafkaClientConfig.Isolation? = nil, fetchWaitMs: Int = 5) -> KafkaClientConfig {
        var c = KafkaClientConfig(brokers: brokers)
        c.groupID = group
        c.clientID = group
        c.offsetReset = .earliest
        c.isolation = isolation
        c.fetchWaitMaxMs = fetchWaitMs
        c.disableNagle = true
        c.logLevel = 3
        return c
    }

    /// A tool's or benchmark's bulk producer (replay, demo backlog, benchmarks).
    static func bulkProducer(brokers: String, lingerMs: Int, batchMessages: Int? = nil) -> KafkaClientConfig {
        var c = KafkaClientConfig(brokers: brokers)
        c.lingerMs = lingerMs
        c.batchMessages = batchMessages
        c.disableNagle = true
        c.logLevel = 3
        return c
    }

    /// Sends librdkafka's own log lines (every client of the process) to swift-log at the
    /// matching level, labelled with the client and librdkafka's facility.
    public static func routeLogs(to logger: Logger) {
        KafkaLogs.route { line in
            let level: Logger.Level
            switch line.severity {
            case ...2: level = .critical
            case 3: level = .error
            case 4: level = .warning
            case 5: level = .notice
            case 6: level = .info
            default: level = .debug
            }
            logger.log(level: level, "\(line.message)", metadata: ["client": "\(line.client)", "facility": "\(line.facility)"])
        }
    }
}

/// librdkafka's logs into swift-log, for the programs that run Kafka clients.
public func routeKafkaLogs(to logger: Logger) { KafkaClients.routeLogs(to: logger) }

/// The bulk producer of tools (`streamrec replay`).
public func bulkProducerConfig(brokers: String, lingerMs: Int) -> KafkaClientConfig { KafkaClients.bulkProducer(brokers: brokers, lingerMs: lingerMs) }
