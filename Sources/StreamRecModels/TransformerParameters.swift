// What SASRec and DiffuRec share about their parameters: the pre-LN transformer block's tensors
// (names and shapes, in snapshot order) and the initialisation every model here uses.
import StreamRecNumerics

enum TransformerParameters {
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
