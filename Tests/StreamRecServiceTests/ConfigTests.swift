import Foundation
import Testing
@testable import StreamRecService
import StreamRecModels
import Logging

@Suite struct ConfigTests {
    func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func defaults() throws {
        let c = try ConfigLoader.load(file: nil, environment: [:])
        #expect(c.kafka.inputTopic == "interactions" && c.kafka.outputTopic == "recommendations" && c.kafka.dlqTopic == "interactions.dlq")
        #expect(c.session.maxItems == 200 && c.recommend.k == 10 && c.recommend.exclude == .seen)
        #expect(c.kafka.brokers == nil)
    }

    @Test func fileThenEnvironmentThenFlags() throws {
        let path = try write("""
        kafka:
          brokers: file:9092
          input_topic: clicks
          consumer:
            security.protocol: SSL
        session:
          max_items: 50
        recommend:
          exclude: recent:3
        events:
          allowed_types: [view, click]
        """)
        let c = try ConfigLoader.load(file: path, environment: ["STREAMREC_KAFKA_BROKERS": "env:9092", "STREAMREC_SESSION_MAX_ITEMS": "60"],
                                      overrides: ["session.max_items": "70"])
        #expect(c.kafka.brokers == "env:9092")
        #expect(c.kafka.inputTopic == "clicks")
        #expect(c.session.maxItems == 70)
        #expect(c.recommend.exclude == .recent(3))
        #expect(c.events.allowedTypes == ["view", "click"])
        #expect(c.kafka.consumerProperties["security.protocol"] == "SSL")
    }

    @Test func errorsNameTheKeyAndTheFix() throws {
        let path = try write("session:\n  max_items: lots\n")
        do {
            _ = try ConfigLoader.load(file: path, environment: [:])
            Issue.record("accepted max_items: lots")
        } catch {
            #expect(error.key == "session.max_items")
            #expect(error.description.contains("must be an integer"))
            #expect(error.description.contains("STREAMREC_SESSION_MAX_ITEMS"))
        }
        let typo = try write("sesion:\n  max_items: 5\n")
        do {
            _ = try ConfigLoader.load(file: typo, environment: [:])
            Issue.record("accepted an unknown key")
        } catch {
            #expect(error.key == "sesion.max_items")
            #expect(error.description.contains("Did you mean 'session.max_items'"))
        }
        #expect(throws: ConfigError.self) { try ConfigLoader.load(file: nil, environment: ["STREAMREC_RECOMMEND_EXCLUDE": "everything"]) }
        #expect(throws: ConfigError.self) { try ConfigLoader.load(file: nil, environment: [:], overrides: ["metrics.port": "70000"]) }
        #expect(throws: ConfigError.self) { try ConfigLoader.load(file: "/nonexistent/streamrec.yaml", environment: [:]) }
    }

    @Test func scaleOutKeysMeanTheSameFromFileEnvironmentAndFlags() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("scale-\(UUID().uuidString).yaml")
        try "delivery: exactly_once\nkafka:\n  instance_id: host-1\nstate:\n  standby_replicas: 1\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try ConfigLoader.load(file: file.path, environment: [:])
        let fromEnv = try ConfigLoader.load(file: nil, environment: ["STREAMREC_DELIVERY": "exactly_once", "STREAMREC_KAFKA_INSTANCE_ID": "host-1",
                                                                      "STREAMREC_STATE_STANDBY_REPLICAS": "1"])
        for c in [fromFile, fromEnv] {
            #expect(c.delivery == .exactlyOnce && c.kafka.instanceID == "host-1" && c.state.standbyReplicas == 1)
        }
        #expect(try ConfigLoader.load(file: nil, environment: [:]).delivery == .atLeastOnce)
        for (key, bad) in [("delivery", "twice"), ("kafka.instance_id", "a b"), ("state.standby_replicas", "-1"), ("kafka.changelog_topic", "")] {
            let error = #expect(throws: ConfigError.self) { try ConfigLoader.load(file: nil, environment: [:], overrides: [key: bad]) }
            #expect(error?.key == key)
        }
    }

    @Test func topologyFileOfTheRepositoryParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let topology = try Topology.load(path: root.appendingPathComponent("topology/topics.yaml").path)
        #expect(topology.topic(role: "input")?.name == "interactions")
        #expect(topology.topic(role: "output")?.name == "recommendations")
        #expect(topology.topic(role: "dlq")?.name == "interactions.dlq")
        #expect(topology.topic(role: "model-updates")?.name == "model-updates")
        #expect(topology.topic(role: "model-updates")?.config["cleanup.policy"] == "compact")
        #expect(topology.topic(role: "changelog")?.config["cleanup.policy"] == "compact")
        #expect(topology.topic(role: "changelog")?.partitions == topology.topic(role: "input")?.partitions, "co-partitioned")
        #expect(topology.topics.allSatisfy { $0.partitions > 0 })
        #expect(throws: ConfigError.self) { try Topology.parse("topics:\n  - name: x\n    partitions: 0\n", source: "t") }
    }

    /// The demo uses its built-in topics only when there is no topology file: one that does not
    /// parse is refused before anything starts, never silently replaced by the defaults.
    @Test func theDemoRefusesATopologyFileThatDoesNotParse() async throws {
        var options = DemoOptions()
        options.topologyPath = try write("topics:\n  - name: x\n    partitions: 0\n")
        await #expect(throws: ConfigError.self) {
            _ = try await Demo.run(options: options, logger: Logger(label: "test"), print: { _ in })
        }
    }

    @Test func retrainKeysAreReadAndErrorsNameTheKey() throws {
        let path = try write("""
        retrain:
          window_hours: 24
          model: sasrec
          max_regression: 0.05
          base_data: /data/base.csv
        train:
          sasrec:
            epochs: 3
            learning_rate: 0.002
            loss: bce
        """)
        let c = try ConfigLoader.load(file: path, environment: ["STREAMREC_RETRAIN_KEEP": "4", "STREAMREC_TRAIN_SASREC_HEADS": "2"],
                                      overrides: ["train.sasrec.width": "32"])
        #expect(c.retrain.windowHours == 24 && c.retrain.model == "sasrec" && c.retrain.maxRegression == 0.05)
        #expect(c.retrain.baseData == "/data/base.csv" && c.retrain.keep == 4)
        // The training keys fill the model's own settings struct: one set of defaults, one meaning.
        let settings = try SASRecConfig(values: c.training["sasrec"] ?? [:])
        #expect(settings.epochs == 3 && settings.learningRate == 0.002 && settings.loss == .binary && settings.width == 32 && settings.heads == 2)
        #expect(settings.maxLength == SASRecConfig().maxLength, "a key not set keeps the struct's default")
        do {
            _ = try ConfigLoader.load(file: nil, environment: [:], overrides: ["train.sasrec.loss": "hinge"])
            Issue.record("an unknown loss was accepted")
        } catch {
            #expect(error.key == "train.sasrec.loss" && error.message.contains("ce, bce, sampled") && error.message.contains("STREAMREC_TRAIN_SASREC_LOSS"))
        }
        do {
            _ = try ConfigLoader.load(file: nil, environment: [:], overrides: ["retrain.sasrec.epochs": "3"])
            Issue.record("the retired retrain.sasrec.* key was accepted")
        } catch {
            #expect(error.message.contains("train.sasrec.epochs"), "the error points to the key that replaced it: \(error)")
        }
        let bad = try write("retrain:\n  model: gpt\n")
        do {
            _ = try ConfigLoader.load(file: bad, environment: [:])
            Issue.record("an unknown model was accepted")
        } catch {
            #expect(error.key == "retrain.model" && error.message.contains("transition") && error.message.contains("STREAMREC_RETRAIN_MODEL"))
        }
        do {
            _ = try ConfigLoader.load(file: nil, environment: [:], overrides: ["retrain.max_regression": "5"])
            Issue.record("a regression of 500% was accepted")
        } catch {
            #expect(error.key == "retrain.max_regression" && error.message.contains("fraction"))
        }
    }
}
