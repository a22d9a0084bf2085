import ArgumentParser
import Foundation
import StreamRecKafka
import StreamRecModels
import StreamRecService

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a dataset into the input topic as interaction events.",
        discussion: "Users are interleaved round-robin so the topic looks like concurrent traffic; each user's order is kept. The data has no timestamps, so monotone ones are synthesized: --start-ms plus --step-ms per event."
    )

    @OptionGroup var common: CommonOptions
    @Option(help: "Dataset: a directory with sequences.txt (../shared/data format), ratings.dat or .csv.") var data: String
    @Option(help: "Kafka bootstrap servers.") var brokers: String
    @Option(help: "Input topic.") var topic: String = "interactions"
    @Option(help: "Stop after this many events (0 = all).") var limit: Int = 0
    @Option(help: "Timestamp of the first event, ms since the epoch.") var startMs: Int64 = 1_700_000_000_000
    @Option(help: "Milliseconds between consecutive events.") var stepMs: Int64 = 1000

    func run() async throws {
        try await userFacing {
            let dataset = try SequenceDataset.load(path: data)
            let (count, seconds) = try await onDedicatedThread(name: "replay") { () throws -> (Int, Double) in
                let producer = try KafkaProducer(bulkProducerConfig(brokers: brokers, lingerMs: 20))
                let start = Date()
                var sent = 0
                var cursors = [Int](repeating: 0, count: dataset.sequences.count)
                var active = Array(dataset.sequences.indices)
                outer: while !active.isEmpty {
                    var still: [Int] = []
                    for u in active {
                        let seq = dataset.sequences[u]
                        let item = seq.items[cursors[u]]
                        let ts = startMs + Int64(sent) * stepMs
                        let json = "{\"user\":\(jsonString(seq.user)),\"item\":\(jsonString(item)),\"ts\":\(ts),\"type\":\"view\"}"
                        try producer.send(KafkaRecord(topic: topic, key: Array(seq.user.utf8), value: Array(json.utf8)))
                        sent += 1
                        if sent % 10_000 == 0 { producer.poll() }
                        if limit > 0 && sent >= limit { break outer }
                        cursors[u] += 1
                        if cursors[u] < seq.items.count { still.append(u) }
                    }
                    active = still
                }
                _ = producer.flush(timeoutMs: 60_000)
                let failures = producer.takeDeliveryFailures()
                producer.close()
                if !failures.isEmpty {
                    throw ValidationError("\(failures.count) events were not delivered: \(failures[0].error.message)")
                }
                return (sent, Date().timeIntervalSince(start))
            }
            print(String(format: "replayed %d events from %@ into %@ in %.1f s (%.0f events/s)", count, data, topic, seconds, Double(count) / max(seconds, 1e-9)))
        }
    }
}

func jsonString(_ s: String) -> String {
    let data = try! JSONSerialization.data(withJSONObject: [s], options: [])
    return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
}
