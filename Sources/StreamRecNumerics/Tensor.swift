// float32 tensors over contiguous buffers, the reverse-mode tape that differentiates them, and
// the parameter store that keeps every weight of a model in ONE buffer (and every gradient in a
// second one), so optimizers, clipping and snapshots work on a single span.
import Foundation

/// A row-major float32 tensor. Activations own their buffers; parameters are views into a
/// ParameterStore. The gradient buffer appears, zeroed, the first time backward touches it.
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>
    /// True for parameters and for results of recorded ops on them.
    public let requiresGrad: Bool
    private var gradBuffer: UnsafeMutablePointer<Float>?
    private let ownsData: Bool
    private let ownsGrad: Bool

    /// A new zeroed tensor.
    public init(zeros shape: [Int], requiresGrad: Bool = false) {
        self.shape = shape
        count = shape.reduce(1, *)
        data = TensorPool.allocate(max(count, 1))
        data.initialize(repeating: 0, count: max(count, 1))
        self.requiresGrad = requiresGrad
        ownsData = true
        ownsGrad = true
    }

    /// A new tensor whose every element the caller writes before anyone reads it (op outputs
    /// that a product with beta = 0 or an elementwise loop fills): skips zeroing, which was 5%
    /// of a batched inference.
    init(uninitialized shape: [Int], requiresGrad: Bool) {
        self.shape = shape
        count = shape.reduce(1, *)
        data = TensorPool.allocate(max(count, 1))
        self.requiresGrad = requiresGrad
        ownsData = true
        ownsGrad = true
    }

    public convenience init(_ values: [Float], shape: [Int], requiresGrad: Bool = false) {
        precondition(values.count == shape.reduce(1, *), "values do not fill shape \(shape)")
        self.init(zeros: shape, requiresGrad: requiresGrad)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A view (parameters): data and gradient live in someone else's buffers.
    init(view data: UnsafeMutablePointer<Float>, grad: UnsafeMutablePointer<Float>?, shape: [Int]) {
        self.shape = shape
        count = shape.reduce(1, *)
        self.data = data
        gradBuffer = grad
        requiresGrad = grad != nil
        ownsData = false
        ownsGrad = false
    }

    deinit {
        if ownsData { TensorPool.deallocate(data, count: max(count, 1)) }
        if ownsGrad, let gradBuffer { TensorPool.deallocate(gradBuffer, count: max(count, 1)) }
    }

    /// The gradient, allocated zeroed on first use.
    public var grad: UnsafeMutablePointer<Float> {
        if let gradBuffer { return gradBuffer }
        let buffer = TensorPool.allocate(max(count, 1))
        buffer.initialize(repeating: 0, count: max(count, 1))
        gradBuffer = buffer
        return buffer
    }

    public var hasGrad: Bool { gradBuffer != nil }

    public func zeroGrad() { gradBuffer?.update(repeating: 0, count: max(count, 1)) }

    /// The first element (a scalar's value). Read through this, not `data[0]`, on a temporary:
    /// `data` does not keep the tensor, and so its buffer, alive.
    public var item: Float { data[0] }

    public var values: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
    public var gradValues: [Float] { gradBuffer.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [] }

    /// Rows and columns of a tensor read as a matrix (last axis = columns).
    public var rows: Int { shape.count <= 1 ? 1 : count / shape[shape.count - 1] }
    public var cols: Int { shape.last ?? 1 }
}

/// Records, during a forward pass, how to push gradients back through each op; `backward`
/// replays them in reverse. A tape with `recording == false` (inference) records nothing.
public final class Tape: @unchecked Sendable {
    public let recording: Bool
    private var steps: [() -> Void] = []
    /// Randomness for dropout and noise: one stream per tape, so a seed fixes a whole run.
    public var rng: RandomSource
    /// Dropout and other train-only behaviour.
    public var training: Bool

    public init(recording: Bool = true, training: Bool = true, seed: UInt64 = 0) {
        Allocator.keepFreedMemory
        self.recording = recording
        self.training = training
        rng = RandomSource(seed: seed)
    }

    /// Whether an op with these inputs must record its backward step.
    @inline(__always)
    func needsGrad(_ inputs: Tensor...) -> Bool {
        recording && inputs.contains { $0.requiresGrad }
    }

    @inline(__always)
    func record(_ step: @escaping () -> Void) { steps.append(step) }

    /// d(loss)/d(everything recorded); loss must be a scalar. Clears the tape.
    public func backward(_ loss: Tensor, seed: Float = 1) {
        precondition(loss.count == 1, "backward needs a scalar loss, got shape \(loss.shape)")
        loss.grad[0] += seed
        for step in steps.reversed() { step() }
        steps.removeAll(keepingCapacity: true)
    }

    /// Drops what was recorded without running it.
    public func reset() { steps.removeAll(keepingCapacity: true) }
}

/// Every weight of a model in one contiguous buffer, carved into named tensors, with a parallel
/// gradient buffer. Declaration order is the layout, so the same declarations always give the
/// same offsets (what a snapshot stores and a checkpoint resumes).
public final class ParameterStore: @unchecked Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public private(set) var entries: [Entry] = []
    public let count: Int
    public let values: UnsafeMutablePointer<Float>
    public let grads: UnsafeMutablePointer<Float>
    private var views: [String: Tensor] = [:]

    /// `specs` in layout order. Every tensor starts at a multiple of 16 floats (64 bytes).
    public init(_ specs: [(name: String, shape: [Int])]) {
        var offset = 0
        var entries: [Entry] = []
        for spec in specs {
            precondition(!entries.contains { $0.name == spec.name }, "duplicate parameter \(spec.name)")
            entries.append(Entry(name: spec.name, shape: spec.shape, offset: offset))
            offset += (spec.shape.reduce(1, *) + 15) / 16 * 16
        }
        count = offset
        values = .allocate(capacity: max(offset, 1))
        values.initialize(repeating: 0, count: max(offset, 1))
        grads = .allocate(capacity: max(offset, 1))
        grads.initialize(repeating: 0, count: max(offset, 1))
        self.entries = entries
        for entry in entries {
            views[entry.name] = Tensor(view: values + entry.offset, grad: grads + entry.offset, shape: entry.shape)
        }
    }

    deinit {
        values.deallocate()
        grads.deallocate()
    }

    public subscript(name: String) -> Tensor {
        guard let view = views[name] else { preconditionFailure("no parameter named \(name)") }
        return view
    }

    public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    public func zeroGrads() { grads.update(repeating: 0, count: count) }

    /// Global L2 norm of the gradients.
    public func gradNorm() -> Float {
        var sum: Double = 0
        for i in 0..<count { sum += Double(grads[i]) * Double(grads[i]) }
        return Float(sum.squareRoot())
    }

    /// Scales gradients so their global norm is at most maxNorm; returns the norm before.
    @discardableResult
    public func clipGradNorm(_ maxNorm: Float) -> Float {
        let norm = gradNorm()
        if norm > maxNorm, norm.isFinite {
            let scale = maxNorm / norm
            for i in 0..<count { grads[i] *= scale }
        }
        return norm
    }

    /// Fills with N(0, std^2), or U(-a, a), per entry.
    public func initialize(_ name: String, normalStd std: Float, rng: inout RandomSource) {
        let e = entry(name)!
        for i in 0..<e.count { values[e.offset + i] = std * rng.normal() }
    }

    public func initialize(_ name: String, uniform bound: Float, rng: inout RandomSource) {
        let e = entry(name)!
        for i in 0..<e.count { values[e.offset + i] = bound * (2 * rng.uniform() - 1) }
    }

    public func fill(_ name: String, _ value: Float) {
        let e = entry(name)!
        (values + e.offset).update(repeating: value, count: e.count)
    }

    public func floats(_ name: String) -> [Float] {
        let e = entry(name)!
        return Array(UnsafeBufferPointer(start: values + e.offset, count: e.count))
    }

    public func load(_ name: String, _ data: [Float]) {
        let e = entry(name)!
        precondition(data.count == e.count, "parameter \(name): \(data.count) values for \(e.count) slots")
        data.withUnsafeBufferPointer { (values + e.offset).update(from: $0.baseAddress!, count: e.count) }
    }

    /// All values, padding included (checkpoint order).
    public var allValues: [Float] { Array(UnsafeBufferPointer(start: values, count: count)) }
}

/// xoshiro256** seeded by splitmix64: fast, reproducible for a seed, good enough for sampling
/// negatives, dropout masks and diffusion noise.
public struct RandomSource: Sendable, RandomNumberGenerator {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64
    private var spareNormal: Float?

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(); s1 = splitmix(); s2 = splitmix(); s3 = splitmix()
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1).
    @inline(__always)
    public mutating func uniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform integer in 0..<n.
    @inline(__always)
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// Standard normal (Box-Muller, pairs cached).
    public mutating func normal() -> Float {
        if let spare = spareNormal { spareNormal = nil; return spare }
        var u = uniform()
        while u <= 1e-12 { u = uniform() }
        let v = uniform()
        let r = (-2 * Foundation.log(u)).squareRoot()
        let angle = 2 * Float.pi * v
        spareNormal = r * Foundation.sin(angle)
        return r * Foundation.cos(angle)
    }

    /// The generator's full state, for checkpoints.
    public var state: [UInt64] { [s0, s1, s2, s3] }
    public init(state: [UInt64]) {
        precondition(state.count == 4)
        s0 = state[0]; s1 = state[1]; s2 = state[2]; s3 = state[3]
    }
}
