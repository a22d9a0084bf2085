// Adam and AdamW over a ParameterStore's single buffer, and learning-rate schedules.
import Foundation

public struct AdamConfig: Sendable, Equatable {
    public var learningRate: Float = 1e-3
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    /// L2 penalty added to the gradient (Adam) or decoupled decay (AdamW).
    public var weightDecay: Float = 0
    /// AdamW (Loshchilov & Hutter): decay applied to the weights, not through the moments.
    public var decoupled = false
    public init(learningRate: Float = 1e-3, weightDecay: Float = 0, decoupled: Bool = false) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.decoupled = decoupled
    }
}

public final class Adam: @unchecked Sendable {
    public let config: AdamConfig
    public let store: ParameterStore
    public private(set) var step: Int = 0
    let m: UnsafeMutablePointer<Float>
    let v: UnsafeMutablePointer<Float>

    public init(store: ParameterStore, config: AdamConfig) {
        self.store = store
        self.config = config
        m = .allocate(capacity: max(store.count, 1))
        m.initialize(repeating: 0, count: max(store.count, 1))
        v = .allocate(capacity: max(store.count, 1))
        v.initialize(repeating: 0, count: max(store.count, 1))
    }

    deinit { m.deallocate(); v.deallocate() }

    /// One update with learning rate `lr` (from a schedule), then zeroes the gradients.
    public func update(lr: Float) {
        step += 1
        let c = config
        let b1t = 1 - Foundation.pow(c.beta1, Float(step)), b2t = 1 - Foundation.pow(c.beta2, Float(step))
        let stepSize = lr / b1t
        let w = store.values, g = store.grads, m = self.m, v = self.v
        let l2 = c.decoupled ? 0 : c.weightDecay, decay = c.decoupled ? lr * c.weightDecay : 0
        Parallel.chunks(store.count, grain: 1 << 16) { range, _ in
            let o = range.lowerBound
            Kernels.native.adamStep(w: w + o, g: g + o, m: m + o, v: v + o, n: range.count, beta1: c.beta1, beta2: c.beta2,
                                    b2t: b2t, stepSize: stepSize, epsilon: c.epsilon, l2: l2, decay: decay)
        }
    }

    /// Moments and step, for checkpoints.
    public var moments: (m: [Float], v: [Float]) {
        (Array(UnsafeBufferPointer(start: m, count: store.count)), Array(UnsafeBufferPointer(start: v, count: store.count)))
    }

    public func restore(step: Int, m: [Float], v: [Float]) {
        precondition(m.count == store.count && v.count == store.count, "optimizer state does not fit the model")
        self.step = step
        m.withUnsafeBufferPointer { self.m.update(from: $0.baseAddress!, count: store.count) }
        v.withUnsafeBufferPointer { self.v.update(from: $0.baseAddress!, count: store.count) }
    }
}

/// Learning rate as a function of the step (0-based).
public enum LearningRateSchedule: Sendable, Equatable {
    case constant(Float)
    /// lr * gamma^(floor(epoch / every)), with the epoch from step / stepsPerEpoch.
    case step(base: Float, gamma: Float, everyEpochs: Int, stepsPerEpoch: Int)
    /// Linear warm-up, then cosine decay to `floor` at totalSteps.
    case cosine(base: Float, warmupSteps: Int, totalSteps: Int, floor: Float)

    public func rate(at step: Int) -> Float {
        switch self {
        case .constant(let lr):
            return lr
        case let .step(base, gamma, every, perEpoch):
            let epoch = step / max(1, perEpoch)
            return base * Foundation.pow(gamma, Float(epoch / max(1, every)))
        case let .cosine(base, warmup, total, floor):
            if step < warmup { return base * Float(step + 1) / Float(warmup) }
            let progress = min(1, Float(step - warmup) / Float(max(1, total - warmup)))
            return floor + (base - floor) * 0.5 * (1 + Foundation.cos(Float.pi * progress))
        }
    }
}
