import Foundation
import XCTest
@testable import StreamRecText

/// The encoder on a tiny random BERT the test writes itself, against a plain Double-precision
/// reference written from the definition (one sequence at a time, no packing): needs no model files.
final class SentenceEncoderTests: XCTestCase {
    static let config = BertConfig(hiddenSize: 8, numHiddenLayers: 2, numAttentionHeads: 2, intermediateSize: 12,
                                   maxPositionEmbeddings: 40, vocabSize: 20, typeVocabSize: 2, layerNormEps: 1e-12)
    static let vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat",
                             "a", "dog", "##s", "run", ".", ",", "big", "red", "car", "go"]

    var directory: URL!
    var weights: [String: (shape: [Int], values: [Float])] = [:]

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("tiny-bert-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        weights = Self.randomWeights(Self.config)
        try writeModel(prefix: "bert.", config: Self.configJSON(Self.config))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    static func configJSON(_ c: BertConfig, hiddenAct: String = "gelu") -> String {
        """
        {"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "\(hiddenAct)", "hidden_size": \(c.hiddenSize),
         "num_hidden_layers": \(c.numHiddenLayers), "num_attention_heads": \(c.numAttentionHeads),
         "intermediate_size": \(c.intermediateSize), "max_position_embeddings": \(c.maxPositionEmbeddings),
         "vocab_size": \(c.vocabSize), "type_vocab_size": \(c.typeVocabSize), "layer_norm_eps": 1e-12,
         "position_embedding_type": "absolute"}
        """
    }

    func writeModel(prefix: String, config: String) throws {
        let list = weights.keys.sorted().map { (name: prefix + $0, shape: weights[$0]!.shape, values: weights[$0]!.values) }
        try SafeTensors.write(list, metadata: ["format": "pt"], to: directory.appendingPathComponent("model.safetensors"))
        try Data(config.utf8).write(to: directory.appendingPathComponent("config.json"))
        try Data((Self.vocabulary.joined(separator: "\n") + "\n").utf8).write(to: directory.appendingPathComponent("vocab.txt"))
    }

    static func randomWeights(_ c: BertConfig) -> [String: (shape: [Int], values: [Float])] {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func random(_ shape: [Int], scale: Float, offset: Float = 0) -> (shape: [Int], values: [Float]) {
            let values = (0..<shape.reduce(1, *)).map { _ -> Float in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return offset + scale * (Float(state >> 40) / Float(1 << 24) * 2 - 1)
            }
            return (shape, values)
        }
        let h = c.hiddenSize, i = c.intermediateSize
        var w: [String: (shape: [Int], values: [Float])] = [
            "embeddings.word_embeddings.weight": random([c.vocabSize, h], scale: 1),
            "embeddings.position_embeddings.weight": random([c.maxPositionEmbeddings, h], scale: 0.5),
            "embeddings.token_type_embeddings.weight": random([c.typeVocabSize, h], scale: 0.5),
            "embeddings.LayerNorm.weight": random([h], scale: 0.2, offset: 1),
            "embeddings.LayerNorm.bias": random([h], scale: 0.2),
            "embeddings.position_ids": ([1, c.maxPositionEmbeddings], (0..<c.maxPositionEmbeddings).map(Float.init)),
            "pooler.dense.weight": random([h, h], scale: 0.5),
        ]
        for n in 0..<c.numHiddenLayers {
            let p = "encoder.layer.\(n)."
            for part in ["query", "key", "value"] {
                w[p + "attention.self.\(part).weight"] = random([h, h], scale: 0.7)
                w[p + "attention.self.\(part).bias"] = random([h], scale: 0.3)
            }
            w[p + "attention.output.dense.weight"] = random([h, h], scale: 0.5)
            w[p + "attention.output.dense.bias"] = random([h], scale: 0.3)
            w[p + "attention.output.LayerNorm.weight"] = random([h], scale: 0.2, offset: 1)
            w[p + "attention.output.LayerNorm.bias"] = random([h], scale: 0.2)
            w[p + "intermediate.dense.weight"] = random([i, h], scale: 0.7)
            w[p + "intermediate.dense.bias"] = random([i], scale: 0.3)
            w[p + "output.dense.weight"] = random([h, i], scale: 0.4)
            w[p + "output.dense.bias"] = random([h], scale: 0.3)
            w[p + "output.LayerNorm.weight"] = random([h], scale: 0.2, offset: 1)
            w[p + "output.LayerNorm.bias"] = random([h], scale: 0.2)
        }
        return w
    }

    /// BERT by its definition, in Double, one sequence at a time.
    func reference(_ ids: [Int32]) -> [Float] {
        let c = Self.config, h = c.hiddenSize, heads = c.numAttentionHeads, d = h / heads, n = ids.count
        func w(_ name: String) -> [Double] { weights[name]!.values.map(Double.init) }
        func linear(_ x: [[Double]], _ name: String) -> [[Double]] {
            let weight = w(name + ".weight"), bias = w(name + ".bias"), inFeatures = x[0].count
            return x.map { row in bias.indices.map { o in bias[o] + (0..<inFeatures).reduce(0.0) { $0 + row[$1] * weight[o * inFeatures + $1] } } }
        }
        func layerNorm(_ x: [[Double]], _ name: String) -> [[Double]] {
            let g = w(name + ".weight"), b = w(name + ".bias")
            return x.map { row in
                let mean = row.reduce(0, +) / Double(row.count)
                let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(row.count)
                return row.indices.map { (row[$0] - mean) / (variance + 1e-12).squareRoot() * g[$0] + b[$0] }
            }
        }
        let word = w("embeddings.word_embeddings.weight"), position = w("embeddings.position_embeddings.weight")
        let type = w("embeddings.token_type_embeddings.weight")
        var x = (0..<n).map { t in (0..<h).map { word[Int(ids[t]) * h + $0] + position[t * h + $0] + type[$0] } }
        x = layerNorm(x, "embeddings.LayerNorm")
        for layer in 0..<c.numHiddenLayers {
            let p = "encoder.layer.\(layer)."
            let q = linear(x, p + "attention.self.query"), k = linear(x, p + "attention.self.key")
            let v = linear(x, p + "attention.self.value")
            var context = Array(repeating: Array(repeating: 0.0, count: h), count: n)
            for head in 0..<heads {
                let columns = (head * d)..<((head + 1) * d)
                for i in 0..<n {
                    let scores = (0..<n).map { j in columns.reduce(0.0) { $0 + q[i][$1] * k[j][$1] } / Double(d).squareRoot() }
                    let top = scores.max()!
                    let e = scores.map { Foundation.exp($0 - top) }, total = e.reduce(0, +)
                    for j in 0..<n { for col in columns { context[i][col] += e[j] / total * v[j][col] } }
                }
            }
            let attended = linear(context, p + "attention.output.dense")
            x = layerNorm(zip(x, attended).map { zip($0, $1).map(+) }, p + "attention.output.LayerNorm")
            let inner = linear(x, p + "intermediate.dense").map { $0.map { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) } }
            let out = linear(inner, p + "output.dense")
            x = layerNorm(zip(x, out).map { zip($0, $1).map(+) }, p + "output.LayerNorm")
        }
        let mean = (0..<h).map { col in x.reduce(0.0) { $0 + $1[col] } / Double(n) }
        let norm = mean.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
        return mean.map { Float($0 / norm) }
    }

    func testMatchesTheDefinitionOnPackedBatchesOfMixedLengths() throws {
        let encoder = try SentenceEncoder(directory: directory, threads: 2)
        XCTAssertEqual(encoder.config, Self.config)
        XCTAssertEqual(encoder.dimension, 8)
        let texts = ["the cat sat on the mat.", "a dog", "", "dogs run, big red car go go go the cat sat on a mat",
                     String(repeating: "the cat ", count: 20), "zebra", "[MASK] car"]
        let embeddings = encoder.encode(texts, batchSize: 3)
        XCTAssertEqual(embeddings.count, texts.count)
        for (text, embedding) in zip(texts, embeddings) {
            let expected = reference(encoder.tokenizer.encode(text))
            let difference = zip(embedding, expected).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(difference, 2e-5, "\(text.debugDescription): \(embedding) vs \(expected)")
        }
        // The long text (42 tokens) takes the GEMM attention path, the rest the loop path.
        XCTAssertGreaterThanOrEqual(encoder.tokenizer.encode(texts[4]).count, 32)
        XCTAssertEqual(encoder.encode(tokenIDs: [[2, 5, 6, 3]])[0], encoder.encode(["the cat"])[0])
    }

    func testMaxLengthIsCappedByPositions() throws {
        let encoder = try SentenceEncoder(directory: directory, threads: 1, maxLength: 1000)
        XCTAssertEqual(encoder.tokenizer.options.maxLength, 40)
        XCTAssertEqual(encoder.tokenizer.encode(String(repeating: "go ", count: 100)).count, 40)
        XCTAssertEqual(try SentenceEncoder(directory: directory, threads: 1, maxLength: 10).tokenizer.options.maxLength, 10)
    }

    func testUnprefixedTensorNamesLoadToo() throws {
        let prefixed = try SentenceEncoder(directory: directory).encode(["big red car"])
        try writeModel(prefix: "", config: Self.configJSON(Self.config))
        XCTAssertEqual(try SentenceEncoder(directory: directory).encode(["big red car"]), prefixed)
    }

    func testRefusals() throws {
        func code(_ body: () throws -> Void) -> TextModelError.Code? {
            do { try body(); return nil } catch { return (error as? TextModelError)?.code }
        }
        XCTAssertEqual(code { _ = try SentenceEncoder(directory: self.directory.appendingPathComponent("nowhere")) }, .missingFile)

        try writeModel(prefix: "", config: Self.configJSON(Self.config, hiddenAct: "relu"))
        XCTAssertEqual(code { _ = try SentenceEncoder(directory: self.directory) }, .unsupported)

        var wrong = Self.config
        wrong.intermediateSize = 16
        try writeModel(prefix: "", config: Self.configJSON(wrong))
        do {
            _ = try SentenceEncoder(directory: directory)
            XCTFail("a config that disagrees with the weights must be refused")
        } catch let error as TextModelError {
            XCTAssertEqual(error.code, .shapeMismatch)
            XCTAssertTrue(error.message.contains("intermediate.dense.weight"), "\(error)")
        }

        try writeModel(prefix: "", config: "{\"hidden_size\": 8}")
        XCTAssertEqual(code { _ = try SentenceEncoder(directory: self.directory) }, .badConfig)

        var odd = Self.config
        odd.numAttentionHeads = 3
        XCTAssertThrowsError(try odd.validate()) { XCTAssertEqual(($0 as? TextModelError)?.code, .badConfig) }
    }
}

final class EncoderKernelTests: XCTestCase {
    func testGeluMatchesLibm() {
        var values: [Float] = [-10, -3, -1, -0.5, 0, 0.5, 1, 3, 10]
        let expected = values.map { 0.5 * Double($0) * (1 + Foundation.erf(Double($0) / 2.0.squareRoot())) }
        values.withUnsafeMutableBufferPointer { EncoderKernels.gelu($0.baseAddress!, count: $0.count) }
        for (got, want) in zip(values, expected) { XCTAssertEqual(Double(got), want, accuracy: 2e-6) }
    }

    func testSoftmaxLayerNormAndPooling() {
        var row: [Float] = [1, 2, 3, 1000]
        row.withUnsafeMutableBufferPointer { EncoderKernels.softmax($0.baseAddress!, count: 3, scale: 0.5) }
        let e = [Float](arrayLiteral: 1, 2, 3).map { Foundation.exp(0.5 * $0) }
        let total = e.reduce(0, +)
        for k in 0..<3 { XCTAssertEqual(row[k], e[k] / total, accuracy: 1e-6) }
        XCTAssertEqual(row[3], 1000)  // untouched beyond count

        var x: [Float] = [1, 2, 3, 4, 10, 10, 10, 10]
        let gamma: [Float] = [1, 1, 2, 1], beta: [Float] = [0, 0, 0, 5]
        x.withUnsafeMutableBufferPointer { p in
            EncoderKernels.layerNorm(out: p.baseAddress!, x: p.baseAddress!, rows: 2, cols: 4, gamma: gamma, beta: beta, eps: 1e-12)
        }
        let s = 1 / Float(1.25).squareRoot()
        XCTAssertEqual(x[0], -1.5 * s, accuracy: 1e-5)
        XCTAssertEqual(x[2], 2 * 0.5 * s, accuracy: 1e-5)
        XCTAssertEqual(x[3], 1.5 * s + 5, accuracy: 1e-5)
        XCTAssertEqual(Array(x[4...]), [0, 0, 0, 5])  // a constant row: zero variance, no NaN

        var pooled = [Float](repeating: 9, count: 2)
        let rows: [Float] = [3, 0, 0, 4, 6, 8]  // mean (3, 4)
        pooled.withUnsafeMutableBufferPointer { EncoderKernels.meanPoolNormalize(out: $0.baseAddress!, x: rows, rows: 3, cols: 2) }
        XCTAssertEqual(pooled[0], 0.6, accuracy: 1e-6)
        XCTAssertEqual(pooled[1], 0.8, accuracy: 1e-6)
    }

    func testBatchesAreSortedLongestFirstAndShared() {
        let lengths = [5, 9, 3, 9, 7, 1]
        XCTAssertEqual(SentenceEncoder.batches(lengths: lengths, batchSize: 4, workers: 1), [[1, 3, 4, 0], [2, 5]])
        // A small input is cut so that both workers get some.
        XCTAssertEqual(SentenceEncoder.batches(lengths: lengths, batchSize: 64, workers: 2), [[1, 3, 4], [0, 2, 5]])
        XCTAssertEqual(SentenceEncoder.batches(lengths: [4], batchSize: 64, workers: 2), [[0]])
        XCTAssertEqual(SentenceEncoder.batches(lengths: [], batchSize: 64, workers: 2), [])
        XCTAssertEqual(SentenceEncoder.batches(lengths: [2, 2], batchSize: 0, workers: 2), [[0], [1]])
    }

    func testWorkQueueHandsOutEachIndexOnce() {
        let queue = WorkQueue(count: 1000)
        let seen = SharedFloats(count: 1000)
        defer { seen.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            while let k = queue.next() { seen.base[k] += 1 }
        }
        XCTAssertEqual(UnsafeBufferPointer(start: seen.base, count: 1000).allSatisfy { $0 == 1 }, true)
        XCTAssertNil(queue.next())
    }
}
