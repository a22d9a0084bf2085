// Configuration: Sendable structs with documented defaults, and ConfigLoader, the one place that
// reads every key (file, then environment, then command-line flags; later wins).
import Foundation
import StreamRecKafka
import StreamRecModels
import StreamRecStorage
import Yams

public struct StreamRecConfig: Sendable {
    public struct Kafka: Sendable {
        /// Comma-separated bootstrap servers. Required by `serve`; `demo` starts its own cluster.
        public var brokers: String? = nil
        public var inputTopic = "interactions"
        public var outputTopic = "recommendations"
        public var dlqTopic = "interactions.dlq"
        /// Compacted topic of model announcements (key = model name); `serve` follows it when
        /// `model.registry` is set, `streamrec models promote|rollback --brokers` writes it.
        public var modelUpdatesTopic = "model-updates"
        /// Compacted topic of item texts (key = item id, value = {"title", "extra"?}); `serve`
        /// follows it when `model.embeddings` and `model.encoder` are set (cold-start items).
        public var itemsTopic = "items"
        public var groupID = "streamrec"
        /// Compacted topic of the sessions, co-partitioned with the input (docs/architecture.md).
        public var changelogTopic = "sessions.changelog"
        /// This instance's stable name: group.instance.id (static membership, so a restart gets
        /// its partitions back) and, in exactly-once mode, the base of its transactional.id.
        public var instanceID: String? = nil
        /// Join the group as a static member named instanceID (group.instance.id).
        public var staticMembership = true
        /// How the group divides the input's partitions (cooperative-sticky: only partitions that
        /// move are revoked, and members keep what they had where they can).
        public var assignor: KafkaClientConfig.Assignor = .cooperativeSticky
        /// Longest a transaction may stay open before the broker aborts it (exactly-once mode).
        public var transactionTimeoutMs = 10_000
        public var clientID = "streamrec"
        /// Extra librdkafka properties (e.g. security.protocol, sasl.*), applied last.
        public var consumerProperties: [String: String] = [:]
        public var producerProperties: [String: String] = [:]
    }
    public struct State: Sendable {
        /// LevelDB directory: sessions, vocabulary, per-partition offsets. One per instance.
        public var directory = "./state"
        /// Keep warm copies of partitions owned elsewhere by tailing their changelog (0 = none).
        public var standbyReplicas = 0
        /// Session records written to LevelDB per restore write.
        public var restoreBatch = 10_000
        /// How restores and standbys read the changelog in at-least-once mode (exactly-once
        /// always reads committed data).
        public var changelogIsolation: KafkaClientConfig.Isolation = .readCommitted
        /// A restore that makes no progress this long fails (ms).
        public var restoreTimeoutMs: Int32 = 60_000
    }
    public struct Recommend: Sendable {
        public var k = 10
        public var exclude: ExclusionPolicy = .seen
        /// What every model answers a user whose session holds no item it knows.
        public var coldUsers: ColdUserPolicy = .popularity
    }
    public struct Pipeline: Sendable {
        /// Most records processed as one micro-batch (one model call, one LevelDB write).
        public var maxBatch = 500
        /// How long a poll waits for the first record of a batch.
        public var pollTimeoutMs: Int32 = 50
        /// How long shutdown waits for in-flight output to be delivered.
        public var drainTimeoutMs: Int32 = 30_000
        /// Sessions swept for TTL per micro-batch (bounded work on the hot path).
        public var sweepPerBatch = 64
    }
    public struct Model: Sendable {
        /// Snapshot to serve. When nil and `registry` is set, the registry's current version.
        public var snapshot: String? = nil
        /// Model registry directory (docs/operations.md). With it, `serve` hot-reloads promoted versions.
        public var registry: String? = nil
        /// How often `serve` re-reads the registry's `current` pointer, the fallback for a missed
        /// announcement (ms).
        public var registryPollMs = 10_000
        /// Key of this model's announcements on `kafka.model_updates_topic`.
        public var name = "default"
        /// Users whose per-layer keys and values SASRec keeps for incremental inference (LRU);
        /// ~200 KB each at d=64, L=200, 2 blocks when full. 0 disables the cache.
        public var cacheUsers = 4096
        /// Embedding cache (`streamrec embed`) that new items from `kafka.items_topic` are
        /// embedded into; with `encoder`, turns the cold-start path on.
        public var embeddings: String? = nil
        /// Sentence-encoder directory (e.g. models/all-MiniLM-L6-v2) for new items' texts.
        public var encoder: String? = nil
        /// Item records read and embedded per step of the cold-start path.
        public var embedBatch = 32
        public init() {}
    }
    /// `streamrec retrain` (docs/operations.md, "Retrain runbook").
    public struct Retrain: Sendable {
        /// Hours of the input topic read, back from the start of the run; 0 = everything retained.
        public var windowHours: Double = 0
        /// Optional dataset merged into the topic's events (shared-data sequences, ratings.dat or CSV).
        public var baseData: String? = nil
        /// A catalogue kind `train --model` accepts.
        public var model = "transition"
        /// Item text embeddings for the text-based models.
        public var embeddings: String? = nil
        /// The gate: the candidate's validation NDCG@10 must be >= current's * (1 - maxRegression).
        public var maxRegression = 0.02
        /// Candidate snapshots, evaluation and reports before publishing (one subdirectory per run).
        public var workDirectory = "/var/lib/streamrec/retrain"
        /// Versions kept by the prune after a promotion; 0 = never prune.
        public var keep = 10
        /// Fewer valid events than this after building is an error (nothing worth training).
        public var minEvents = 100
        /// How long reading the topic up to its high watermarks may take (ms).
        public var readTimeoutMs = 300_000
        public init() {}
    }
    public struct Metrics: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port (logged); -1 turns the endpoint off.
        public var port = 9464
    }

    public var kafka = Kafka()
    public var delivery: DeliveryMode = .atLeastOnce
    public var state = State()
    public var session = SessionPolicy()
    public var recommend = Recommend()
    public var events = EventRules()
    public var pipeline = Pipeline()
    public var model = Model()
    public var metrics = Metrics()
    public var retrain = Retrain()
    /// Training settings per catalogue family (`train.<family>.<key>` -> text), over each model's
    /// defaults: what `train` and `retrain` train with.
    public var training: [String: [String: String]] = [:]

    public init() {}
}

/// Which items a recommendation must not contain.
public enum ExclusionPolicy: Sendable, Equatable, CustomStringConvertible {
    case none
    /// Everything in the user's session.
    case seen
    /// The last n items of the session.
    case recent(Int)

    public static func parse(_ text: String) -> ExclusionPolicy? {
        switch text {
        case "none": return ExclusionPolicy.none
        case "seen": return .seen
        default:
            if text.hasPrefix("recent:"), let n = Int(text.dropFirst(7)), n > 0 { return .recent(n) }
            return nil
        }
    }

    public var description: String {
        switch self {
        case .none: return "none"
        case .seen: return "seen"
        case .recent(let n): return "recent:\(n)"
        }
    }
}

/// How answers reach the output topic (docs/architecture.md, "Delivery modes").
public enum DeliveryMode: String, Sendable, CaseIterable {
    /// Output acknowledged, then the LevelDB commit point: a crash in between answers a batch again.
    case atLeastOnce = "at_least_once"
    /// Each micro-batch is one Kafka transaction (answers, dead letters, changelog, input offsets);
    /// read_committed readers see every input answered once.
    case exactlyOnce = "exactly_once"
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let source: String
    public let message: String
    public var description: String { "config key '\(key)' (\(source)): \(message)" }

    public init(key: String, source: String, message: String) {
        self.key = key
        self.source = source
        self.message = message
    }
}

public enum ConfigLoader {
    /// One entry per key: its documentation and how it is applied.
    struct Key: Sendable {
        let name: String
        let doc: String
        let apply: @Sendable (inout StreamRecConfig, String) -> String?   // returns an error message
    }

    static let keys: [Key] = [
        string("kafka.brokers", "bootstrap servers, host:port[,host:port]", \.kafka.brokers),
        nonEmpty("kafka.input_topic", "topic of interaction events", \.kafka.inputTopic),
        nonEmpty("kafka.output_topic", "topic recommendations are published to", \.kafka.outputTopic),
        nonEmpty("kafka.dlq_topic", "dead-letter topic for rejected events", \.kafka.dlqTopic),
        nonEmpty("kafka.model_updates_topic", "compacted topic of model announcements (key = model.name)", \.kafka.modelUpdatesTopic),
        nonEmpty("kafka.items_topic", "compacted topic of item texts for cold-start items (key = item id)", \.kafka.itemsTopic),
        nonEmpty("kafka.group_id", "consumer group of the serving instances", \.kafka.groupID),
        nonEmpty("kafka.client_id", "client.id reported to the brokers", \.kafka.clientID),
        nonEmpty("kafka.changelog_topic", "compacted sessions changelog, co-partitioned with the input topic", \.kafka.changelogTopic),
        Key(name: "kafka.instance_id", doc: "stable name of this instance: static group membership, and its transactional.id in exactly-once mode") { c, v in
            guard !v.isEmpty, v.utf8.count <= 200, v.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }) else {
                return "must be 1-200 letters, digits, '.', '_' or '-' and unique within the group (e.g. the host name), got '\(v)'"
            }
            c.kafka.instanceID = v
            return nil
        },
        bool("kafka.static_membership", "with kafka.instance_id: join as a static member (a restart within session.timeout.ms keeps its partitions); false on brokers that never expire static members (tansu 0.6)", \.kafka.staticMembership),
        Key(name: "kafka.assignor", doc: "cooperative-sticky | range — how the group divides the input's partitions (cooperative-sticky revokes only the partitions that move; range, eager, revokes every partition at every rebalance). Every member of a group must use the same one: switching needs all instances stopped") { c, v in
            guard let a = KafkaClientConfig.Assignor(rawValue: v) else { return "must be 'range' or 'cooperative-sticky', got '\(v)'" }
            c.kafka.assignor = a
            return nil
        },
        int("kafka.transaction_timeout_ms", "exactly-once: longest a transaction stays open before the broker aborts it (ms)", 1_000...900_000, \.kafka.transactionTimeoutMs),
        Key(name: "delivery", doc: "at_least_once | exactly_once — how answers reach the output topic") { c, v in
            guard let mode = DeliveryMode(rawValue: v) else { return "must be 'at_least_once' or 'exactly_once', got '\(v)'" }
            c.delivery = mode
            return nil
        },
        nonEmpty("state.directory", "LevelDB directory of this instance", \.state.directory),
        int("state.standby_replicas", "keep warm copies of partitions owned elsewhere (0 = off; any N >= 1 warms every partition not owned)", 0...100, \.state.standbyReplicas),
        int("state.restore_batch", "session records per LevelDB write while restoring from the changelog", 1...1_000_000, \.state.restoreBatch),
        Key(name: "state.changelog_isolation", doc: "read_committed | read_uncommitted — how restores and standbys read the changelog in at_least_once mode (exactly_once always reads committed). Keep read_committed on Apache Kafka: it costs nothing there and skips aborted batches of an earlier exactly_once run; read_uncommitted is for tansu 0.6, whose read_committed fetches can stop below the high watermark") { c, v in
            guard let i = KafkaClientConfig.Isolation(rawValue: v) else { return "must be 'read_committed' or 'read_uncommitted', got '\(v)'" }
            c.state.changelogIsolation = i
            return nil
        },
        Key(name: "state.restore_timeout_ms", doc: "a changelog restore that makes no progress this long fails (ms)") { c, v in
            guard let n = Int32(v), n >= 1_000 else { return "must be an integer of at least 1000 (ms), got '\(v)'" }
            c.state.restoreTimeoutMs = n
            return nil
        },
        int("session.max_items", "items kept per user session", 1...100_000, \.session.maxItems),
        Key(name: "session.idle_ttl_ms", doc: "a session idle longer than this is dropped (ms)") { c, v in
            guard let n = Int64(v), n > 0 else { return "must be a positive number of milliseconds, got '\(v)'" }
            c.session.idleTTLMs = n
            return nil
        },
        int("session.cache_capacity", "sessions kept decoded in memory", 0...100_000_000, \.session.cacheCapacity),
        int("recommend.k", "items per recommendation", 1...1000, \.recommend.k),
        Key(name: "recommend.cold_users", doc: "answer to a user whose session holds no item the model knows, the same for every model: popularity (the snapshot's most popular items) | none (no answer)") { c, v in
            guard let policy = ColdUserPolicy(rawValue: v) else { return "must be popularity or none, got '\(v)'" }
            c.recommend.coldUsers = policy
            return nil
        },
        Key(name: "recommend.exclude", doc: "none | seen | recent:N — items never recommended back") { c, v in
            guard let p = ExclusionPolicy.parse(v) else { return "must be 'none', 'seen' or 'recent:N' (N > 0), got '\(v)'" }
            c.recommend.exclude = p
            return nil
        },
        int("events.max_value_bytes", "largest accepted event value (bytes)", 64...10_000_000, \.events.maxValueBytes),
        int("events.max_id_bytes", "longest user or item id (bytes)", 1...65_536, \.events.maxIdBytes),
        Key(name: "events.allowed_types", doc: "comma-separated accepted event types") { c, v in
            let types = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !types.isEmpty else { return "must list at least one event type, e.g. 'view,click,purchase'" }
            c.events.allowedTypes = Set(types)
            return nil
        },
        bool("events.require_key_matches_user", "reject records whose key is not the user id", \.events.requireKeyMatchesUser),
        int("pipeline.max_batch", "records per micro-batch", 1...100_000, \.pipeline.maxBatch),
        Key(name: "pipeline.poll_timeout_ms", doc: "wait for the first record of a batch (ms)") { c, v in
            guard let n = Int32(v), n >= 0, n <= 60_000 else { return "must be an integer from 0 to 60000, got '\(v)'" }
            c.pipeline.pollTimeoutMs = n
            return nil
        },
        Key(name: "pipeline.drain_timeout_ms", doc: "shutdown wait for in-flight output (ms)") { c, v in
            guard let n = Int32(v), n >= 0 else { return "must be a non-negative integer, got '\(v)'" }
            c.pipeline.drainTimeoutMs = n
            return nil
        },
        int("pipeline.sweep_per_batch", "expired sessions deleted per batch", 0...1_000_000, \.pipeline.sweepPerBatch),
        string("model.snapshot", "model snapshot file to serve (default: the registry's current version)", \.model.snapshot),
        string("model.registry", "model registry directory; serve hot-reloads versions promoted there", \.model.registry),
        int("model.registry_poll_ms", "how often serve re-reads the registry's current pointer (ms)", 100...86_400_000, \.model.registryPollMs),
        nonEmpty("model.name", "model name: the key of its announcements on the model-updates topic", \.model.name),
        int("model.cache_users", "sessions kept for incremental inference (LRU; 0 = recompute every event)", 0...10_000_000, \.model.cacheUsers),
        Key(name: "retrain.window_hours", doc: "hours of the input topic retrain reads (0 = everything retained)") { c, v in
            guard let h = Double(v.trimmingCharacters(in: .whitespaces)), h >= 0, h.isFinite else { return "must be a non-negative number of hours (0 = from the earliest retained offset), got '\(v)'" }
            c.retrain.windowHours = h
            return nil
        },
        Key(name: "retrain.base_data", doc: "dataset merged into the topic's events (directory with sequences.txt, ratings.dat or user,item,ts .csv)") { c, v in
            c.retrain.baseData = v.isEmpty ? nil : v
            return nil
        },
        Key(name: "retrain.model", doc: "model retrain trains (its settings: the train.<family>.* keys): \(ModelCatalogue.standard.trainKinds.joined(separator: " | "))") { c, v in
            guard ModelCatalogue.standard.entry(forTrainKind: v) != nil else { return "must be one of \(ModelCatalogue.standard.trainKinds.joined(separator: ", ")), got '\(v)'" }
            c.retrain.model = v
            return nil
        },
        string("retrain.embeddings", "item text-embedding cache for the text-based models (llm2sasrec, llmseqsim; `streamrec embed`)", \.retrain.embeddings),
        Key(name: "retrain.max_regression", doc: "largest allowed relative drop of validation NDCG@10 vs the current model (0.02 = 2%)") { c, v in
            guard let x = Double(v.trimmingCharacters(in: .whitespaces)), x >= 0, x <= 1 else { return "must be a fraction from 0 to 1 (0.02 = 2%), got '\(v)'" }
            c.retrain.maxRegression = x
            return nil
        },
        nonEmpty("retrain.work_dir", "retrain's work directory (candidate snapshots, evaluations, reports)", \.retrain.workDirectory),
        int("retrain.keep", "versions kept by the prune after a promotion (0 = never prune)", 0...100_000, \.retrain.keep),
        int("retrain.min_events", "fewest valid events retrain trains on", 1...Int.max, \.retrain.minEvents),
        int("retrain.read_timeout_ms", "longest time to read the input topic up to its high watermarks (ms)", 1_000...86_400_000, \.retrain.readTimeoutMs),
        string("model.embeddings", "embedding cache file new items are embedded into (cold-start path, with model.encoder)", \.model.embeddings),
        string("model.encoder", "sentence-encoder directory for new items' texts (cold-start path, with model.embeddings)", \.model.encoder),
        int("model.embed_batch", "item records embedded per step of the cold-start path", 1...10_000, \.model.embedBatch),
        nonEmpty("metrics.host", "address of the /metrics and /healthz endpoint", \.metrics.host),
        int("metrics.port", "port of the endpoint (0 = any free port, -1 = off)", -1...65_535, \.metrics.port),
    ] + trainingKeys

    /// `train.<family>.<key>` for every setting of every catalogue model: what `train` flags,
    /// `retrain` and the environment set. Each value is checked alone here; the settings as a
    /// whole (a width that heads must divide) when a training run builds them.
    static var trainingKeys: [Key] {
        ModelCatalogue.standard.entries.flatMap { entry in
            entry.settingKeys.map { setting in
                let doc = "\(entry.name): \(setting.doc)" + (setting.defaultValue.isEmpty ? "" : " (default \(setting.defaultValue))")
                return Key(name: "train.\(entry.name).\(setting.name)", doc: doc) { c, v in
                    if let error = entry.check(key: setting.name, value: v) { return error.problem }
                    c.training[entry.name, default: [:]][setting.name] = v
                    return nil
                }
            }
        }
    }

    /// Keys whose value is a map of librdkafka properties passed through as they are.
    nonisolated(unsafe) static let passthroughMaps: [String: WritableKeyPath<StreamRecConfig, [String: String]>] = [
        "kafka.consumer": \.kafka.consumerProperties,
        "kafka.producer": \.kafka.producerProperties,
    ]

    public static var documentedKeys: [(name: String, doc: String)] { keys.map { ($0.name, $0.doc) } }

    public static func environmentName(_ key: String) -> String {
        "STREAMREC_" + key.uppercased().replacingOccurrences(of: ".", with: "_")
    }

    /// File, then environment (STREAMREC_SECTION_KEY), then `overrides` (flags); later wins.
    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
                            overrides: [String: String] = [:]) throws(ConfigError) -> StreamRecConfig {
        var config = StreamRecConfig()
        if let file {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ConfigError(key: "--config", source: file, message: "cannot read the file: \(error.localizedDescription). Pass an existing YAML file or drop --config.")
            }
            let values = try flatten(yaml: text, file: file)
            for (key, value) in values.scalars.sorted(by: { $0.key < $1.key }) {
                try apply(key: key, value: value, source: file, to: &config)
            }
            for (key, map) in values.maps {
                config[keyPath: passthroughMaps[key]!].merge(map) { _, new in new }
            }
        }
        for key in keys {
            if let value = environment[environmentName(key.name)] {
                try apply(key: key.name, value: value, source: "environment \(environmentName(key.name))", to: &config)
            }
        }
        for (key, value) in overrides.sorted(by: { $0.key < $1.key }) {
            try apply(key: key, value: value, source: "command line", to: &config)
        }
        return config
    }

    static func apply(key: String, value: String, source: String, to config: inout StreamRecConfig) throws(ConfigError) {
        guard let entry = keys.first(where: { $0.name == key }) else {
            let suggestion = closest(to: key).map { " Did you mean '\($0)'?" } ?? ""
            throw ConfigError(key: key, source: source, message: "unknown key.\(suggestion) Known keys: see docs/operations.md or `streamrec config keys`.")
        }
        if let problem = entry.apply(&config, value) {
            throw ConfigError(key: key, source: source, message: "\(problem). \(entry.doc); set it in the config file, as \(environmentName(key)), or by flag.")
        }
    }

    struct Flattened {
        var scalars: [String: String] = [:]
        var maps: [String: [String: String]] = [:]
    }

    static func flatten(yaml text: String, file: String) throws(ConfigError) -> Flattened {
        let node: Any?
        do {
            node = try Yams.load(yaml: text)
        } catch {
            throw ConfigError(key: "(file)", source: file, message: "not valid YAML: \(error)")
        }
        guard let node else { return Flattened() }
        guard let root = node as? [String: Any] else {
            throw ConfigError(key: "(root)", source: file, message: "the file must be a YAML mapping of sections (kafka:, session:, ...)")
        }
        var out = Flattened()
        func walk(_ map: [String: Any], _ prefix: String) throws(ConfigError) {
            for (k, v) in map {
                let key = prefix.isEmpty ? k : "\(prefix).\(k)"
                if passthroughMaps[key] != nil {
                    guard let props = v as? [String: Any] else {
                        throw ConfigError(key: key, source: file, message: "must be a mapping of librdkafka properties, e.g. {security.protocol: SSL}")
                    }
                    out.maps[key] = props.mapValues { scalarText($0) }
                } else if let sub = v as? [String: Any] {
                    try walk(sub, key)
                } else if let list = v as? [Any] {
                    out.scalars[key] = list.map { scalarText($0) }.joined(separator: ",")
                } else {
                    out.scalars[key] = scalarText(v)
                }
            }
        }
        try walk(root, "")
        return out
    }

    private static func scalarText(_ v: Any) -> String {
        if let b = v as? Bool, String(describing: type(of: v)).contains("Bool") { return b ? "true" : "false" }
        return "\(v)"
    }

    static func closest(to key: String) -> String? {
        let scored = keys.map { ($0.name, editDistance($0.name, key)) }.min { $0.1 < $1.1 }
        guard let (name, d) = scored, d <= max(3, key.count / 3) else { return nil }
        return name
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var prev = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }

    // Key builders: each knows its type, its range and how to say what is wrong.

    private static func string(_ name: String, _ doc: String, _ path: WritableKeyPath<StreamRecConfig, String?> & Sendable) -> Key {
        Key(name: name, doc: doc) { c, v in
            c[keyPath: path] = v.isEmpty ? nil : v
            return nil
        }
    }

    private static func nonEmpty(_ name: String, _ doc: String, _ path: WritableKeyPath<StreamRecConfig, String> & Sendable) -> Key {
        Key(name: name, doc: doc) { c, v in
            guard !v.trimmingCharacters(in: .whitespaces).isEmpty else { return "must not be empty" }
            c[keyPath: path] = v
            return nil
        }
    }

    private static func int(_ name: String, _ doc: String, _ range: ClosedRange<Int>, _ path: WritableKeyPath<StreamRecConfig, Int> & Sendable) -> Key {
        Key(name: name, doc: doc) { c, v in
            guard let n = Int(v.trimmingCharacters(in: .whitespaces)), range.contains(n) else {
                return "must be an integer from \(range.lowerBound) to \(range.upperBound), got '\(v)'"
            }
            c[keyPath: path] = n
            return nil
        }
    }

    private static func float(_ name: String, _ doc: String, _ range: ClosedRange<Float>, _ path: WritableKeyPath<StreamRecConfig, Float> & Sendable) -> Key {
        Key(name: name, doc: doc) { c, v in
            guard let x = Float(v.trimmingCharacters(in: .whitespaces)), range.contains(x) else {
                return "must be a number from \(range.lowerBound) to \(range.upperBound), got '\(v)'"
            }
            c[keyPath: path] = x
            return nil
        }
    }

    private static func bool(_ name: String, _ doc: String, _ path: WritableKeyPath<StreamRecConfig, Bool> & Sendable) -> Key {
        Key(name: name, doc: doc) { c, v in
            switch v.lowercased() {
            case "true", "yes", "1", "on": c[keyPath: path] = true
            case "false", "no", "0", "off": c[keyPath: path] = false
            default: return "must be true or false, got '\(v)'"
            }
            return nil
        }
    }
}
