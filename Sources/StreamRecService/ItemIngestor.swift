// Cold-start items from the stream: follows the compacted `items` topic (key = item id, value =
// {"title": ..., "extra"?: ...}), embeds new or changed texts OFF the event path, stores them in
// the embedding cache, and makes the items rankable at once by the serving model when it can take
// them (LLMSeqSim: a new row of text vectors; LLM2SASRec: a new scoring row projected through
// the snapshot's PCA; see ItemExtensibleRecommender).
//
// Threads: its own thread and its own consumer, assigned to every partition of the topic from the
// beginning (no group: every instance needs every item). Encoding runs here; only the short
// step that gives the items vocabulary ids and appends their rows waits for the pipeline's
// micro-batch to end (the vocabulary lock), so the event path never waits for the encoder.
//
// Restarts: the topic is compacted, so its backlog is every item's latest text; items the model
// knows are skipped, the others come back from the cache without re-encoding (the text hash
// matches). A hot-swapped model gets every item added so far again.
import Foundation
import Logging
import ServiceLifecycle
import StreamRecKafka
import StreamRecModels
import StreamRecStorage
import StreamRecText

/// Texts in, one vector per text out (the sentence encoder in `serve`; a fake in tests).
public typealias TextEmbedder = @Sendable ([String]) throws -> [[Float]]

/// One record of the `items` topic.
public struct ItemRecord: Sendable, Equatable {
    public var id: String
    public var title: String
    public var extra: String?

    public var text: String { ItemText.text(title: title, extra: extra) }

    /// nil for anything but a JSON object with a string "title" (and optionally a string "extra").
    public static func parse(key: [UInt8]?, value: [UInt8]?) -> ItemRecord? {
        guard let key, !key.isEmpty, let id = String(bytes: key, encoding: .utf8), let value, !value.isEmpty,
              let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
              let title = object["title"] as? String else { return nil }
        let extra = object["extra"] as? String
        guard !ItemText.text(title: title, extra: extra).isEmpty else { return nil }
        return ItemRecord(id: id, title: title, extra: extra)
    }
}

public final class ItemIngestor: @unchecked Sendable {
    let stack: ServingStack
    let cache: EmbeddingCache
    let cachePath: String?
    let embed: TextEmbedder
    let metrics: PipelineMetrics
    let logger: Logger
    public let stop = StopSignal()

    private let lock = NSLock()
    private var added: [(id: ItemID, external: String, textVector: [Float])] = []
    private var embedded = 0
    private var rejected = 0
    private var servedVersion: String?
    private var warnedUnsupported = false

    /// `cache`: `model.embeddings` loaded (or a new one for the encoder's model id); saved to
    /// `cachePath` after every batch that embedded something.
    public init(stack: ServingStack, cache: EmbeddingCache, cachePath: String?, embed: @escaping TextEmbedder,
                metrics: PipelineMetrics, logger: Logger) {
        self.stack = stack
        self.cache = cache
        self.cachePath = cachePath
        self.embed = embed
        self.metrics = metrics
        self.logger = logger
    }

    /// Items made rankable, texts encoded and records refused since start (also in metrics).
    public var counts: (added: Int, embedded: Int, rejected: Int) { lock.withLock { (added.count, embedded, rejected) } }

    private var stopped: Bool { stop.isStopped || stack.stop.isStopped }

    /// Runs until stopped. Blocking: own thread.
    public func run() {
        let config = stack.config
        var consumer: KafkaConsumer? = nil
        var nextConnect = Date()
        logger.info("following cold-start items", metadata: ["topic": "\(config.kafka.itemsTopic)", "cache": "\(cachePath ?? "-")",
                                                             "cached": "\(cache.count)"])
        defer { consumer?.close() }
        while !stopped {
            if consumer == nil {
                guard Date() >= nextConnect else { Thread.sleep(forTimeInterval: 0.2); continue }
                do {
                    consumer = try Self.connect(config, logger: logger)
                } catch {
                    logger.warning("items topic unavailable (\(error)); retrying in 5 s")
                    nextConnect = Date().addingTimeInterval(5)
                    continue
                }
            }
            reapplyAfterModelSwap()
            do {
                let messages = try consumer!.poll(maxMessages: config.model.embedBatch, timeoutMs: 200)
                if !messages.isEmpty { ingest(messages) }
            } catch {
                logger.warning("items consumer: \(error); reconnecting")
                consumer?.close()
                consumer = nil
            }
        }
        logger.info("item ingestor stopped")
    }

    static func connect(_ config: StreamRecConfig, logger: Logger) throws -> KafkaConsumer {
        guard let brokers = config.kafka.brokers else { throw KafkaError(.config, "no brokers configured") }
        let topic = config.kafka.itemsTopic
        // Never joins or commits: assign() below.
        let consumer = try KafkaConsumer(KafkaClients.itemsReader(config, brokers: brokers))
        guard let partitions = try consumer.partitionCount(topic, timeoutMs: 5_000), partitions > 0 else {
            consumer.close()
            throw KafkaError(.config, "topic \(topic) does not exist; create it with `streamrec topics apply` (topology/topics.yaml)")
        }
        try consumer.assign(Dictionary(uniqueKeysWithValues: (0..<Int32(partitions)).map { (TopicPartition(topic, $0), StartOffset.beginning) }))
        consumer.onError = { error in logger.debug("items consumer: \(error.message)") }
        return consumer
    }

    /// Parses, embeds what the cache lacks, then binds and appends. Called on the ingestor's thread.
    func ingest(_ messages: [KafkaMessage]) {
        var latest: [String: ItemRecord] = [:]
        var order: [String] = []
        for message in messages {
            guard let record = ItemRecord.parse(key: message.key, value: message.value) else {
                // Tombstones (null value) delete nothing: an item once served stays rankable until the next snapshot.
                if message.value != nil {
                    lock.withLock { rejected += 1 }
                    metrics.itemsRejected.increment()
                    logger.warning("items record at \(message.topicPartition)@\(message.offset) is not {\"title\": string, \"extra\"?: string} with a key; ignored")
                }
                continue
            }
            if latest.updateValue(record, forKey: record.id) == nil { order.append(record.id) }
        }
        guard !order.isEmpty else { return }
        let records = order.map { latest[$0]! }
        // Skip what the serving model already ranks (before paying for the encoder).
        let recommender = stack.model.recommender as? any ItemExtensibleRecommender
        let unknown: [ItemRecord] = stack.pipeline.withVocabulary {
            records.filter { record in
                guard let recommender, let id = stack.vocabulary.id(for: record.id) else { return true }
                return !recommender.knows(id)
            }
        }
        guard !unknown.isEmpty else { return }
        do {
            let count = try cache.update(unknown.map { ($0.id, $0.text) }, chunk: stack.config.model.embedBatch, embed: embed)
            if count > 0 {
                lock.withLock { embedded += count }
                metrics.itemsEmbedded.increment(by: count)
                if let cachePath { try cache.save(to: cachePath) }
            }
        } catch {
            logger.error("embedding \(unknown.count) new items failed: \(error); they stay unrankable until they are published again")
            return
        }
        guard let recommender, let dimension = recommender.textDimension else {
            if !warnedUnsupported {
                warnedUnsupported = true
                logger.warning("the serving model (\(stack.model.recommender.descriptor.name)) cannot take new items; they are embedded into the cache only (serve llmseqsim or an llm2sasrec snapshot)")
            }
            return
        }
        guard dimension == cache.dimension else {
            logger.error("the serving model expects \(dimension)-dimensional text vectors, the cache (\(cache.modelID)) holds \(cache.dimension); new items not added")
            return
        }
        do {
            let entries = try stack.withVocabularyWhileOpen { () throws -> [(id: ItemID, external: String, textVector: [Float])] in
                let entries = unknown.compactMap { record in
                    cache.vector(for: record.id).map { (id: stack.vocabulary.idOrAssign(record.id), external: record.id, textVector: Array($0)) }
                }
                if stack.vocabulary.hasPending {
                    var writes = WriteBatch()
                    stack.vocabulary.stagePending(into: &writes)
                    try stack.store.write(writes, sync: true)
                    stack.vocabulary.didCommitPending()
                }
                recommender.addItems(entries)
                return entries
            }
            lock.withLock {
                added += entries
                servedVersion = recommender.descriptor.version
            }
            metrics.itemsAdded.increment(by: entries.count)
            logger.info("new items rankable", metadata: ["count": "\(entries.count)", "model": "\(recommender.descriptor.name)"])
        } catch {
            logger.error("could not record new items in the vocabulary: \(error)")
        }
    }

    /// A hot-swapped model starts without the items added to its predecessor: add them again.
    private func reapplyAfterModelSwap() {
        guard let recommender = stack.model.recommender as? any ItemExtensibleRecommender, recommender.textDimension == cache.dimension else { return }
        let (version, items) = lock.withLock { (servedVersion, added) }
        guard !items.isEmpty, version != recommender.descriptor.version else { return }
        do {
            try stack.withVocabularyWhileOpen { recommender.addItems(items) }
        } catch {
            // Only at shutdown (the store is closed); the next start re-adds them from the cache.
            logger.info("new items not re-added to the swapped-in model: \(error)")
            return
        }
        lock.withLock { servedVersion = recommender.descriptor.version }
        logger.info("new items re-added to the swapped-in model", metadata: ["count": "\(items.count)"])
    }
}

extension ItemIngestor {
    /// The cold-start path as `serve` configures it: nil unless `model.embeddings` and
    /// `model.encoder` are both set. Loads the cache (a new one when the file is missing or was
    /// made by another encoder) and the sentence encoder (one thread: the pipeline has the other core).
    public static func fromConfig(stack: ServingStack, metrics: PipelineMetrics, logger: Logger) throws -> ItemIngestor? {
        let config = stack.config.model
        guard let cachePath = config.embeddings, let encoderPath = config.encoder else {
            if config.embeddings != nil || config.encoder != nil {
                logger.warning("cold-start items need both model.embeddings and model.encoder; the items topic is not followed")
            }
            return nil
        }
        let directory = URL(fileURLWithPath: encoderPath)
        let modelID = try EmbeddingCache.modelID(directory: directory)
        let encoder = try SentenceEncoder(directory: directory, threads: 1)
        var cache = EmbeddingCache(modelID: modelID, dimension: encoder.dimension)
        if FileManager.default.fileExists(atPath: cachePath) {
            let existing = try EmbeddingCache.load(path: cachePath)
            if existing.modelID == modelID && existing.dimension == encoder.dimension {
                cache = existing
            } else {
                logger.warning("\(cachePath) was made by \(existing.modelID), the encoder is \(modelID); new items go to a fresh cache at that path")
            }
        }
        let batch = config.embedBatch
        return ItemIngestor(stack: stack, cache: cache, cachePath: cachePath, embed: { encoder.encode($0, batchSize: batch) },
                            metrics: metrics, logger: logger)
    }
}

/// Runs the ingestor on its own thread as a lifecycle Service.
public final class ItemIngestorService: Service, @unchecked Sendable {
    let ingestor: ItemIngestor

    public init(ingestor: ItemIngestor) { self.ingestor = ingestor }

    public func run() async throws {
        let ingestor = self.ingestor
        try await runUntilStopped(thread: "streamrec-item-ingestor", stop: ingestor.stop) { ingestor.run() }
    }
}
