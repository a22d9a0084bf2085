import COpenBLAS
import Dispatch
import Foundation

// A native BERT-family sentence encoder (all-MiniLM-L6-v2 and its kin), written in the manner
// of llm.c: one function per layer, every parameter in one contiguous buffer carved into named
// views, every activation in one scratch buffer carved the same way.
//
// Shape legend
//   B  sequences in a forward pass           T  tokens of those sequences, packed (no padding)
//   L  tokens of one sequence (≤ P)          P  max_position_embeddings (512)
//   H  hidden_size (384)                     I  intermediate_size (1536)
//   NH num_attention_heads (12)              D  head size H / NH (32)
//   V  vocab_size (30522)                    N  num_hidden_layers (6)
//
// Forward, post-LN as BERT:
//   x[T,H]   = LayerNorm(wte[id] + wpe[position] + wtt[0])
//   per layer:
//     qkv[T,3H] = x · Wqkvᵀ + bqkv                 (Q, K, V weights stacked: one GEMM)
//     a[T,H]    = attention(qkv) per sequence      (softmax(q kᵀ / √D) v, per head)
//     x         = LayerNorm(x + a · Woᵀ + bo)
//     f[T,I]    = GELU(x · W1ᵀ + b1)               (exact, erf form)
//     x         = LayerNorm(x + f · W2ᵀ + b2)
//   e[B,H]   = L2-normalise(mean of x over each sequence's tokens)
//
// Other BERT-family models: any checkpoint whose config.json says model_type "bert" (or omits
// it), hidden_act "gelu" and absolute position embeddings runs unchanged, e.g. BAAI/bge-small-en
// (H 384, 12 layers) or intfloat/e5-small-v2. Put its files in a folder of their own, e.g.
// models/bge-small-en-v1.5/ holding model.safetensors, config.json, vocab.txt (and optionally
// tokenizer_config.json, sentence_bert_config.json), and pass that folder to
// `SentenceEncoder(directory:)`. Tensor names may carry a "bert." prefix. Mind each model's
// pooling: this encoder mean-pools (MiniLM, e5); bge recommends the [CLS] vector, so its
// embeddings from here are usable but not the published ones. e5 expects "query: "/"passage: "
// prefixes in the text itself. See docs/models.md.

/// config.json of a BERT-family checkpoint (Hugging Face names).
public struct BertConfig: Sendable, Equatable, Decodable {
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var maxPositionEmbeddings: Int
    public var vocabSize: Int
    public var typeVocabSize: Int
    public var layerNormEps: Float
    public var hiddenAct: String
    public var positionEmbeddingType: String?
    public var modelType: String?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings", vocabSize = "vocab_size"
        case typeVocabSize = "type_vocab_size", layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act", positionEmbeddingType = "position_embedding_type"
        case modelType = "model_type"
    }

    public init(hiddenSize: Int, numHiddenLayers: Int, numAttentionHeads: Int, intermediateSize: Int,
                maxPositionEmbeddings: Int, vocabSize: Int, typeVocabSize: Int = 2,
                layerNormEps: Float = 1e-12, hiddenAct: String = "gelu",
                positionEmbeddingType: String? = "absolute", modelType: String? = "bert") {
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.vocabSize = vocabSize
        self.typeVocabSize = typeVocabSize
        self.layerNormEps = layerNormEps
        self.hiddenAct = hiddenAct
        self.positionEmbeddingType = positionEmbeddingType
        self.modelType = modelType
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        maxPositionEmbeddings = try c.decode(Int.self, forKey: .maxPositionEmbeddings)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        typeVocabSize = try c.decodeIfPresent(Int.self, forKey: .typeVocabSize) ?? 2
        layerNormEps = Float(try c.decodeIfPresent(Double.self, forKey: .layerNormEps) ?? 1e-12)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu"
        positionEmbeddingType = try c.decodeIfPresent(String.self, forKey: .positionEmbeddingType)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType)
    }

    public static func load(from url: URL) throws -> BertConfig {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TextModelError(.missingFile, "no config.json at \(url.path); run `make setup` "
                + "(ops/fetch-minilm.sh) or pass the model folder that holds config.json")
        }
        let config: BertConfig
        do {
            config = try JSONDecoder().decode(BertConfig.self, from: data)
        } catch {
            throw TextModelError(.badConfig, "\(url.path) is not a BERT config.json (\(error)); "
                + "it needs hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, "
                + "max_position_embeddings and vocab_size")
        }
        try config.validate(source: url.path)
        return config
    }

    /// Refuses shapes and variants this encoder does not compute.
    public func validate(source: String = "config.json") throws {
        if let modelType, !["bert", "minilm"].contains(modelType.lowercased()) {
            throw TextModelError(.unsupported, "\(source): model_type \(modelType) is not BERT-family; "
                + "this encoder runs BERT encoders (MiniLM, bge-small, e5-small)")
        }
        guard hiddenAct == "gelu" else {
            throw TextModelError(.unsupported, "\(source): hidden_act \(hiddenAct); only \"gelu\" (exact, erf) is implemented")
        }
        if let positionEmbeddingType, positionEmbeddingType != "absolute" {
            throw TextModelError(.unsupported, "\(source): position_embedding_type \(positionEmbeddingType); only \"absolute\" is implemented")
        }
        guard hiddenSize > 0, numHiddenLayers > 0, numAttentionHeads > 0, intermediateSize > 0,
              maxPositionEmbeddings > 2, vocabSize > 0, typeVocabSize > 0,
              hiddenSize % numAttentionHeads == 0, layerNormEps > 0 else {
            throw TextModelError(.badConfig, "\(source): impossible shape (hidden_size \(hiddenSize) must be a "
                + "positive multiple of num_attention_heads \(numAttentionHeads); all sizes positive)")
        }
    }
}

/// Offsets of every parameter in the one contiguous weight buffer (llm.c's ParameterTensors).
struct ParameterLayout: Sendable {
    struct Layer: Sendable {
        var qkvWeight = 0      // [3H, H]  rows: query, key, value
        var qkvBias = 0        // [3H]
        var attnOutWeight = 0  // [H, H]
        var attnOutBias = 0    // [H]
        var attnNormGamma = 0  // [H]
        var attnNormBeta = 0   // [H]
        var ffnInWeight = 0    // [I, H]
        var ffnInBias = 0      // [I]
        var ffnOutWeight = 0   // [H, I]
        var ffnOutBias = 0     // [H]
        var ffnNormGamma = 0   // [H]
        var ffnNormBeta = 0    // [H]
    }

    var wordEmbeddings = 0      // [V, H]
    var positionEmbeddings = 0  // [P, H]
    var tokenTypeEmbeddings = 0 // [types, H]
    var embedNormGamma = 0      // [H]
    var embedNormBeta = 0       // [H]
    var layers: [Layer] = []
    var count = 0

    init(_ c: BertConfig) {
        let h = c.hiddenSize, i = c.intermediateSize
        func take(_ n: Int) -> Int { defer { count += n }; return count }
        wordEmbeddings = take(c.vocabSize * h)
        positionEmbeddings = take(c.maxPositionEmbeddings * h)
        tokenTypeEmbeddings = take(c.typeVocabSize * h)
        embedNormGamma = take(h)
        embedNormBeta = take(h)
        for _ in 0..<c.numHiddenLayers {
            var l = Layer()
            l.qkvWeight = take(3 * h * h); l.qkvBias = take(3 * h)
            l.attnOutWeight = take(h * h); l.attnOutBias = take(h)
            l.attnNormGamma = take(h); l.attnNormBeta = take(h)
            l.ffnInWeight = take(i * h); l.ffnInBias = take(i)
            l.ffnOutWeight = take(h * i); l.ffnOutBias = take(h)
            l.ffnNormGamma = take(h); l.ffnNormBeta = take(h)
            layers.append(l)
        }
    }
}

/// The weights: one allocation, immutable once loaded, shared by every worker thread.
final class EncoderWeights: @unchecked Sendable {
    let layout: ParameterLayout
    let base: UnsafeMutablePointer<Float>

    init(config c: BertConfig, tensors: SafeTensors) throws {
        layout = ParameterLayout(c)
        base = .allocate(capacity: layout.count)
        base.initialize(repeating: 0, count: layout.count)
        // Every stored property is set, so when `load` throws, deinit runs and frees `base`.
        try load(config: c, tensors: tensors)
    }

    deinit { base.deallocate() }

    subscript(offset: Int) -> UnsafePointer<Float> { UnsafePointer(base + offset) }

    private func load(config c: BertConfig, tensors: SafeTensors) throws {
        let suffix = "embeddings.word_embeddings.weight"
        guard let wordKey = tensors.tensors.keys.filter({ $0.hasSuffix(suffix) }).min(by: { $0.count < $1.count }) else {
            throw TextModelError(.shapeMismatch, "\(tensors.source) has no \(suffix); not a BERT checkpoint")
        }
        let prefix = String(wordKey.dropLast(suffix.count))  // "" or "bert."
        let h = c.hiddenSize, i = c.intermediateSize
        func copy(_ name: String, _ shape: [Int], to offset: Int) throws {
            let info = try tensors.info(prefix + name)
            guard info.shape == shape else {
                throw TextModelError(.shapeMismatch, "\(tensors.source): \(prefix + name) has shape \(info.shape) "
                    + "but config.json implies \(shape); config.json and the weights are from different models")
            }
            try tensors.copyFloats(prefix + name, into: UnsafeMutableBufferPointer(start: base + offset, count: info.elementCount))
        }
        let l = layout
        try copy("embeddings.word_embeddings.weight", [c.vocabSize, h], to: l.wordEmbeddings)
        try copy("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, h], to: l.positionEmbeddings)
        try copy("embeddings.token_type_embeddings.weight", [c.typeVocabSize, h], to: l.tokenTypeEmbeddings)
        try copy("embeddings.LayerNorm.weight", [h], to: l.embedNormGamma)
        try copy("embeddings.LayerNorm.bias", [h], to: l.embedNormBeta)
        for (n, w) in l.layers.enumerated() {
            let p = "encoder.layer.\(n)."
            try copy(p + "attention.self.query.weight", [h, h], to: w.qkvWeight)
            try copy(p + "attention.self.key.weight", [h, h], to: w.qkvWeight + h * h)
            try copy(p + "attention.self.value.weight", [h, h], to: w.qkvWeight + 2 * h * h)
            try copy(p + "attention.self.query.bias", [h], to: w.qkvBias)
            try copy(p + "attention.self.key.bias", [h], to: w.qkvBias + h)
            try copy(p + "attention.self.value.bias", [h], to: w.qkvBias + 2 * h)
            try copy(p + "attention.output.dense.weight", [h, h], to: w.attnOutWeight)
            try copy(p + "attention.output.dense.bias", [h], to: w.attnOutBias)
            try copy(p + "attention.output.LayerNorm.weight", [h], to: w.attnNormGamma)
            try copy(p + "attention.output.LayerNorm.bias", [h], to: w.attnNormBeta)
            try copy(p + "intermediate.dense.weight", [i, h], to: w.ffnInWeight)
            try copy(p + "intermediate.dense.bias", [i], to: w.ffnInBias)
            try copy(p + "output.dense.weight", [h, i], to: w.ffnOutWeight)
            try copy(p + "output.dense.bias", [h], to: w.ffnOutBias)
            try copy(p + "output.LayerNorm.weight", [h], to: w.ffnNormGamma)
            try copy(p + "output.LayerNorm.bias", [h], to: w.ffnNormBeta)
        }
    }
}

/// Turns texts into unit-length sentence embeddings with a BERT-family encoder (by default
/// all-MiniLM-L6-v2: 384 dimensions, mean pooling, as sentence-transformers computes them).
///
/// Model files: a folder with model.safetensors, config.json and vocab.txt (tokenizer_config.json
/// and sentence_bert_config.json are read when present). `make setup` puts all-MiniLM-L6-v2 in
/// models/all-MiniLM-L6-v2/ at the repository root (ops/fetch-minilm.sh). Other BERT-family
/// models (bge-small, e5-small) go in a sibling folder of their own under models/ and load the
/// same way; see the notes at the top of this file and docs/models.md.
///
/// Threads: `encode` runs `threads` workers that take batches from a shared queue, each running
/// OpenBLAS single-threaded; creating an encoder sets OpenBLAS to one thread for the whole process.
/// An encoder is immutable and may be shared; concurrent `encode` calls each use `threads` workers.
public final class SentenceEncoder: Sendable {
    public let config: BertConfig
    public let tokenizer: WordPieceTokenizer
    /// Worker threads per `encode` call.
    public let threads: Int
    let weights: EncoderWeights

    /// Embedding width (hidden_size).
    public var dimension: Int { config.hiddenSize }

    /// The all-MiniLM-L6-v2 folder: $STREAMREC_MINILM_DIR, else models/all-MiniLM-L6-v2 under
    /// `root` (the repository root).
    public static func defaultDirectory(root: URL) -> URL {
        if let override = ProcessInfo.processInfo.environment["STREAMREC_MINILM_DIR"], !override.isEmpty {
            return URL(fileURLWithPath: override, isDirectory: true)
        }
        return root.appendingPathComponent("models/all-MiniLM-L6-v2", isDirectory: true)
    }

    /// Loads config.json, vocab.txt and model.safetensors from `directory`.
    /// - Parameters:
    ///   - threads: workers per `encode` call (the machines here have 2 cores).
    ///   - maxLength: tokens per text including [CLS]/[SEP]; default: sentence_bert_config.json's
    ///     max_seq_length, else 256, never above max_position_embeddings.
    public init(directory: URL, threads: Int = 2, maxLength: Int? = nil) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TextModelError(.missingFile, "no model folder at \(directory.path); run `make setup` "
                + "(ops/fetch-minilm.sh fetches all-MiniLM-L6-v2) or set STREAMREC_MINILM_DIR")
        }
        let config = try BertConfig.load(from: directory.appendingPathComponent("config.json"))
        var options = WordPieceTokenizer.Options()
        let settings = Self.jsonObject(directory.appendingPathComponent("tokenizer_config.json"))
        if let lower = settings["do_lower_case"] as? Bool { options.lowercase = lower }
        if let strip = settings["strip_accents"] as? Bool { options.stripAccents = strip }
        if let chinese = settings["tokenize_chinese_chars"] as? Bool { options.tokenizeChineseChars = chinese }
        let sentenceSettings = Self.jsonObject(directory.appendingPathComponent("sentence_bert_config.json"))
        let configured = (sentenceSettings["max_seq_length"] as? NSNumber)?.intValue
        options.maxLength = min(maxLength ?? configured ?? 256, config.maxPositionEmbeddings)
        guard options.maxLength >= 2 else {
            throw TextModelError(.badConfig, "maxLength \(options.maxLength) leaves no room for [CLS] and [SEP]")
        }
        let tokenizer = try WordPieceTokenizer(vocabularyURL: directory.appendingPathComponent("vocab.txt"), options: options)
        guard tokenizer.vocabularySize <= config.vocabSize else {
            throw TextModelError(.shapeMismatch, "\(directory.path): vocab.txt has \(tokenizer.vocabularySize) "
                + "tokens but config.json says vocab_size \(config.vocabSize); the files are from different models")
        }
        let tensors = try SafeTensors(contentsOf: directory.appendingPathComponent("model.safetensors"))
        self.weights = try EncoderWeights(config: config, tensors: tensors)
        self.config = config
        self.tokenizer = tokenizer
        self.threads = max(1, threads)
        openblas_set_num_threads(1)
    }

    private static func jsonObject(_ url: URL) -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: url.path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return object
    }

    // MARK: - Encoding

    /// Embeddings of `texts`, in order, each `dimension` floats of unit L2 norm.
    /// Texts are sorted by token count and cut into batches of at most `batchSize` similar
    /// lengths; each batch is packed without padding (one forward pass), and the `threads`
    /// workers take batches from a shared queue, longest first.
    public func encode(_ texts: [String], batchSize: Int = 64) -> [[Float]] {
        encode(tokenIDs: texts.map(tokenizer.encode), batchSize: batchSize)
    }

    /// Embeddings of already tokenized inputs (each [CLS] ... [SEP]). Every id must be below
    /// config.vocabSize and every input at most config.maxPositionEmbeddings long (a programming
    /// error otherwise: this traps rather than read outside the weights).
    public func encode(tokenIDs inputs: [[Int32]], batchSize: Int = 64) -> [[Float]] {
        let n = inputs.count
        guard n > 0 else { return [] }
        let vocabulary = Int32(config.vocabSize)
        for input in inputs {
            precondition(input.count <= config.maxPositionEmbeddings,
                         "SentenceEncoder: \(input.count) tokens exceed max_position_embeddings \(config.maxPositionEmbeddings)")
            precondition(input.allSatisfy { $0 >= 0 && $0 < vocabulary },
                         "SentenceEncoder: token id outside 0..<\(vocabulary)")
        }
        let h = config.hiddenSize
        let batches = Self.batches(lengths: inputs.map(\.count), batchSize: batchSize, workers: threads)
        let output = SharedFloats(count: n * h)
        defer { output.deallocate() }
        // Workers pull the next batch instead of meeting at a barrier after each one, so a worker
        // that the OS deschedules (the cores here are shared) does not hold the other up.
        let queue = WorkQueue(count: batches.count)
        DispatchQueue.concurrentPerform(iterations: min(threads, batches.count)) { _ in
            while let next = queue.next() {
                let rows = batches[next]
                self.forward(rows.map { inputs[$0] }, rows: rows, output: output)
            }
        }
        return (0..<n).map { Array(UnsafeBufferPointer(start: output.base + $0 * h, count: h)) }
    }

    /// Indices of the inputs grouped into forward passes: sorted by length, longest first (so the
    /// heaviest passes start first and the short ones fill the tail), at most `batchSize` per pass,
    /// and small enough that every worker gets a share of a small input.
    static func batches(lengths: [Int], batchSize: Int, workers: Int) -> [[Int]] {
        let order = lengths.indices.sorted { (lengths[$0], $1) > (lengths[$1], $0) }
        let share = (order.count + max(1, workers) - 1) / max(1, workers)
        let size = max(1, min(batchSize, share))
        return stride(from: 0, to: order.count, by: size).map { Array(order[$0..<min(order.count, $0 + size)]) }
    }

    /// One worker's forward pass over `sequences`, writing embedding k to output row rows[k].
    private func forward(_ sequences: [[Int32]], rows: [Int], output: SharedFloats) {
        let c = config, w = weights, l = weights.layout
        let h = c.hiddenSize, i = c.intermediateSize, heads = c.numAttentionHeads
        var spans: [(start: Int, length: Int)] = []
        var t = 0
        for s in sequences { spans.append((t, s.count)); t += s.count }
        let longest = sequences.map(\.count).max() ?? 0
        guard t > 0 else { return }

        // Activations, carved from one allocation (llm.c's ActivationTensors).
        let xSize = t * h, qkvSize = t * 3 * h, ffnSize = t * i, scoreSize = longest * longest
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * xSize + qkvSize + ffnSize + scoreSize)
        defer { scratch.deallocate() }
        let x = scratch                   // [T, H] the residual stream
        let residual = x + xSize          // [T, H] x + sublayer(x), before its LayerNorm
        let attended = residual + xSize   // [T, H] attention heads' outputs
        let qkv = attended + xSize        // [T, 3H]
        let ffn = qkv + qkvSize           // [T, I]
        let scores = ffn + ffnSize        // [L, L]

        embed(out: x, sequences: sequences)
        EncoderKernels.layerNorm(out: x, x: x, rows: t, cols: h, gamma: w[l.embedNormGamma],
                                 beta: w[l.embedNormBeta], eps: c.layerNormEps)
        for layer in l.layers {
            attentionBlock(x: x, residual: residual, attended: attended, qkv: qkv, scores: scores,
                           tokens: t, spans: spans, layer: layer, heads: heads)
            feedForwardBlock(x: x, residual: residual, ffn: ffn, tokens: t, layer: layer, intermediate: i)
        }
        for (k, span) in spans.enumerated() {
            EncoderKernels.meanPoolNormalize(out: output.base + rows[k] * h, x: x + span.start * h,
                                             rows: span.length, cols: h)
        }
    }

    /// x[T, H] = word + position + token type 0 embeddings (before the embedding LayerNorm).
    private func embed(out x: UnsafeMutablePointer<Float>, sequences: [[Int32]]) {
        let h = config.hiddenSize, w = weights, l = weights.layout
        let tokenType = w[l.tokenTypeEmbeddings]
        var row = 0
        for sequence in sequences {
            for (position, id) in sequence.enumerated() {
                let word = w[l.wordEmbeddings + Int(id) * h], place = w[l.positionEmbeddings + position * h]
                let o = x + row * h
                for c in 0..<h { o[c] = word[c] + place[c] + tokenType[c] }
                row += 1
            }
        }
    }

    /// x = LayerNorm(x + SelfAttention(x)).
    private func attentionBlock(x: UnsafeMutablePointer<Float>, residual: UnsafeMutablePointer<Float>,
                                attended: UnsafeMutablePointer<Float>, qkv: UnsafeMutablePointer<Float>,
                                scores: UnsafeMutablePointer<Float>, tokens t: Int,
                                spans: [(start: Int, length: Int)], layer: ParameterLayout.Layer, heads: Int) {
        let h = config.hiddenSize, w = weights
        EncoderKernels.broadcastRows(out: qkv, rows: t, bias: w[layer.qkvBias], cols: 3 * h)
        EncoderKernels.linear(out: qkv, input: x, rows: t, inFeatures: h, outFeatures: 3 * h,
                              weight: w[layer.qkvWeight], accumulate: true)
        EncoderKernels.attention(out: attended, qkv: qkv, sequences: spans, heads: heads,
                                 headSize: h / heads, scratch: scores)
        EncoderKernels.residualPlusBias(out: residual, residual: x, rows: t, bias: w[layer.attnOutBias], cols: h)
        EncoderKernels.linear(out: residual, input: attended, rows: t, inFeatures: h, outFeatures: h,
                              weight: w[layer.attnOutWeight], accumulate: true)
        EncoderKernels.layerNorm(out: x, x: residual, rows: t, cols: h, gamma: w[layer.attnNormGamma],
                                 beta: w[layer.attnNormBeta], eps: config.layerNormEps)
    }

    /// x = LayerNorm(x + W2 · GELU(W1 · x + b1) + b2).
    private func feedForwardBlock(x: UnsafeMutablePointer<Float>, residual: UnsafeMutablePointer<Float>,
                                  ffn: UnsafeMutablePointer<Float>, tokens t: Int,
                                  layer: ParameterLayout.Layer, intermediate i: Int) {
        let h = config.hiddenSize, w = weights
        EncoderKernels.broadcastRows(out: ffn, rows: t, bias: w[layer.ffnInBias], cols: i)
        EncoderKernels.linear(out: ffn, input: x, rows: t, inFeatures: h, outFeatures: i,
                              weight: w[layer.ffnInWeight], accumulate: true)
        EncoderKernels.gelu(ffn, count: t * i)
        EncoderKernels.residualPlusBias(out: residual, residual: x, rows: t, bias: w[layer.ffnOutBias], cols: h)
        EncoderKernels.linear(out: residual, input: ffn, rows: t, inFeatures: i, outFeatures: h,
                              weight: w[layer.ffnOutWeight], accumulate: true)
        EncoderKernels.layerNorm(out: x, x: residual, rows: t, cols: h, gamma: w[layer.ffnNormGamma],
                                 beta: w[layer.ffnNormBeta], eps: config.layerNormEps)
    }

    // MARK: - Throughput

    public struct Throughput: Sendable, CustomStringConvertible {
        public let texts: Int
        public let tokens: Int
        public let batchSize: Int
        public let threads: Int
        /// Best wall time of the timed runs, seconds.
        public let seconds: Double
        public var sentencesPerSecond: Double { Double(texts) / seconds }
        public var tokensPerSecond: Double { Double(tokens) / seconds }
        public var description: String {
            String(format: "StreamRecText: %d texts, batch %d, %d threads: %.1f sentences/s (%.0f tokens/s, best of runs)",
                   texts, batchSize, threads, sentencesPerSecond, tokensPerSecond)
        }
    }

    /// Encodes `texts` once to warm up, then `repeats` times (tokenization included), and keeps
    /// the best wall time, as the sentence-transformers peer measures itself.
    public func measureThroughput(texts: [String], batchSize: Int = 64, repeats: Int = 3) -> Throughput {
        _ = encode(Array(texts.prefix(256)), batchSize: batchSize)
        var best = Double.infinity
        for _ in 0..<max(1, repeats) {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = encode(texts, batchSize: batchSize)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let tokens = texts.reduce(0) { $0 + tokenizer.encode($1).count }
        return Throughput(texts: texts.count, tokens: tokens, batchSize: batchSize, threads: threads, seconds: best)
    }

    /// Loads the model in `modelDirectory` with `threads` workers and measures it on `texts`.
    public static func measureThroughput(texts: [String], modelDirectory: URL, threads: Int = 2,
                                         batchSize: Int = 64, repeats: Int = 3) throws -> Throughput {
        try SentenceEncoder(directory: modelDirectory, threads: threads)
            .measureThroughput(texts: texts, batchSize: batchSize, repeats: repeats)
    }
}

/// Hands out 0, 1, 2, ... count-1 once each to whichever thread asks.
final class WorkQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var taken = 0
    private let count: Int
    init(count: Int) { self.count = count }
    func next() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard taken < count else { return nil }
        taken += 1
        return taken - 1
    }
}

/// An output buffer the worker threads write disjoint rows of.
final class SharedFloats: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    init(count: Int) {
        base = .allocate(capacity: count)
        base.initialize(repeating: 0, count: count)
    }
    func deallocate() { base.deallocate() }
}
