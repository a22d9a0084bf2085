// The pre-LN transformer block SASRec, BERT4Rec and DiffuRec share: its tensors (names and
// shapes, in snapshot order), the initialisation every model here uses, and the one block code
// that training, full passes, last-position passes and SASRec's incremental steps all run.
//
//   x += dropout(Attn(LN1(x) Wqkv + bqkv) Wo + bo)                 causal (SASRec) or not
//   x += dropout(act(LN2(x) W1 + b1) -> dropout -> W2 + b2)          act: ReLU (SASRec) or GELU
import StreamRecNumerics

/// Block b of a model: its weights, looked up once (an incremental step runs every block per
/// event), and how it computes.
struct TransformerBlock {
    enum Activation { case relu, gelu }

    /// Which positions the attention reads, and which go on.
    enum Attention {
        /// Training and full passes: every position attends within its window (causally or not).
        case full(SequenceLayout)
        /// A serving pass's final block: keys and values of every position, the rest of the
        /// block for each window's last position only (output [B, d]); for a causal model the
        /// last query sees every position anyway, so this equals the full pass's last rows.
        case lastOnly(SequenceLayout)
        /// Incremental serving: x holds one new position per session, which attends over that
        /// session's cached keys and values (`keysAndValues` has appended the new ones first):
        /// `cache(session, body)` hands them to body.
        case cached((Int, (UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Void) -> Void)
    }

    let index: Int
    let heads: Int
    let dropout: Float
    let causal: Bool
    let activation: Activation
    let ln1Gamma, ln1Beta, qkvWeight, qkvBias, outWeight, outBias: Tensor
    let ln2Gamma, ln2Beta, ffn1Weight, ffn1Bias, ffn2Weight, ffn2Bias: Tensor

    init(_ store: ParameterStore, index b: Int, heads: Int, dropout: Float, causal: Bool, activation: Activation) {
        let w = { (name: String) in store["block\(b).\(name)"] }
        index = b
        self.heads = heads
        self.dropout = dropout
        self.causal = causal
        self.activation = activation
        ln1Gamma = w("ln1.gamma"); ln1Beta = w("ln1.beta"); qkvWeight = w("qkv.weight"); qkvBias = w("qkv.bias")
        outWeight = w("out.weight"); outBias = w("out.bias"); ln2Gamma = w("ln2.gamma"); ln2Beta = w("ln2.beta")
        ffn1Weight = w("ffn1.weight"); ffn1Bias = w("ffn1.bias"); ffn2Weight = w("ffn2.weight"); ffn2Bias = w("ffn2.bias")
    }

    /// `keysAndValues(block, qkv)` sees the QKV projection [n, 3d] before attention (caches).
    func callAsFunction(_ tape: Tape, _ x: Tensor, _ attention: Attention, keysAndValues: ((Int, Tensor) -> Void)? = nil) -> Tensor {
        let qkv = tape.linear(tape.layerNorm(x, ln1Gamma, ln1Beta), qkvWeight, qkvBias)
        keysAndValues?(index, qkv)
        var residual = x
        let attended: Tensor
        switch attention {
        case .full(let layout):
            attended = tape.selfAttention(qkv, layout: layout, heads: heads, causal: causal)
        case .lastOnly(let layout):
            let lastRows = layout.lastRows
            attended = tape.singleQueryAttention(tape.gather(qkv, lastRows), qkv, layout: layout, heads: heads)
            residual = tape.gather(x, lastRows)
        case .cached(let cache):
            precondition(causal, "a K/V cache serves causal attention only")
            attended = tape.cachedAttention(qkv, heads: heads, cache: cache)
        }
        let y = tape.add(residual, tape.dropout(tape.linear(attended, outWeight, outBias), dropout))
        let projected = tape.linear(tape.layerNorm(y, ln2Gamma, ln2Beta), ffn1Weight, ffn1Bias)
        let inner = activation == .relu ? tape.relu(projected) : tape.gelu(projected)
        return tape.add(y, tape.dropout(tape.linear(tape.dropout(inner, dropout), ffn2Weight, ffn2Bias), dropout))
    }
}

extension TransformerBlock {
    /// Block b's tensors: LN1, the fused QKV projection, the output projection, LN2, the FFN.
    static func block(_ b: Int, width d: Int, ffn f: Int) -> [(name: String, shape: [Int])] {
        [("block\(b).ln1.gamma", [d]), ("block\(b).ln1.beta", [d]),
         ("block\(b).qkv.weight", [d, 3 * d]), ("block\(b).qkv.bias", [3 * d]),
         ("block\(b).out.weight", [d, d]), ("block\(b).out.bias", [d]),
         ("block\(b).ln2.gamma", [d]), ("block\(b).ln2.beta", [d]),
         ("block\(b).ffn1.weight", [d, f]), ("block\(b).ffn1.bias", [f]),
         ("block\(b).ffn2.weight", [f, d]), ("block\(b).ffn2.bias", [d])]
    }

    /// Xavier-normal for every matrix (embedding tables included), unit layer-norm gains, zero
    /// biases; draws in store order, so a seed fixes the whole model.
    /// `std` 0 means Xavier-normal per matrix; a positive value draws every matrix and embedding
    /// from N(0, std^2) (the GPT-2 / RecBole convention, e.g. 0.02), which starts each residual
    /// block close to the identity.
    static func initialize(_ store: ParameterStore, seed: UInt64, std fixedStd: Float = 0) {
        var rng = RandomSource(seed: seed)
        for entry in store.entries {
            if entry.name.hasSuffix(".gamma") {
                store.fill(entry.name, 1)
            } else if entry.shape.count == 2 {
                let std = fixedStd > 0 ? fixedStd : (2 / Float(entry.shape[0] + entry.shape[1])).squareRoot()
                store.initialize(entry.name, normalStd: std, rng: &rng)
            }
        }
    }
}
