// A model's settings, kept once: one struct with its defaults, and one key table that types,
// ranges and documents every setting. The same table decodes a snapshot's hyper-parameters
// (a key an older snapshot lacks takes its default), checks a resumed checkpoint, and gives the
// service's `train.<family>.<key>` config keys, the `train` flags and the environment their
// meaning (StreamRecService's ConfigLoader builds its training keys from it).
import Foundation

/// One setting: its key (as in snapshots and config files), what it means, and how to read and
/// write it. `stored: false` marks a shorthand that sets other keys (DiffuRec's `lambda`) and is
/// never written into a snapshot.
public struct SettingKey<Settings>: Sendable {
    public let name: String
    public let doc: String
    /// Other spellings accepted on input (an older flag name, e.g. `lr`).
    public let aliases: [String]
    public let stored: Bool
    let parse: @Sendable (inout Settings, String) -> String?
    let format: @Sendable (Settings) -> String

    public init(_ name: String, _ doc: String, aliases: [String] = [], stored: Bool = true,
                parse: @escaping @Sendable (inout Settings, String) -> String?, format: @escaping @Sendable (Settings) -> String) {
        self.name = name
        self.doc = doc
        self.aliases = aliases
        self.stored = stored
        self.parse = parse
        self.format = format
    }

    public static func int(_ name: String, _ doc: String, _ range: ClosedRange<Int>, _ path: WritableKeyPath<Settings, Int> & Sendable,
                           aliases: [String] = []) -> SettingKey {
        SettingKey(name, doc, aliases: aliases, parse: { s, v in
            guard let n = Int(v.trimmingCharacters(in: .whitespaces)), range.contains(n) else {
                return "must be an integer from \(range.lowerBound) to \(range.upperBound), got '\(v)'"
            }
            s[keyPath: path] = n
            return nil
        }, format: { "\($0[keyPath: path])" })
    }

    public static func seed(_ name: String, _ doc: String, _ path: WritableKeyPath<Settings, UInt64> & Sendable) -> SettingKey {
        SettingKey(name, doc, parse: { s, v in
            guard let n = UInt64(v.trimmingCharacters(in: .whitespaces)) else { return "must be an integer from 0 to \(UInt64.max), got '\(v)'" }
            s[keyPath: path] = n
            return nil
        }, format: { "\($0[keyPath: path])" })
    }

    public static func float(_ name: String, _ doc: String, _ range: ClosedRange<Float>, _ path: WritableKeyPath<Settings, Float> & Sendable,
                             aliases: [String] = []) -> SettingKey {
        SettingKey(name, doc, aliases: aliases, parse: { s, v in
            guard let x = Float(v.trimmingCharacters(in: .whitespaces)), range.contains(x) else {
                return "must be a number from \(range.lowerBound) to \(range.upperBound), got '\(v)'"
            }
            s[keyPath: path] = x
            return nil
        }, format: { "\($0[keyPath: path])" })
    }

    public static func double(_ name: String, _ doc: String, _ range: ClosedRange<Double>, _ path: WritableKeyPath<Settings, Double> & Sendable) -> SettingKey {
        SettingKey(name, doc, parse: { s, v in
            guard let x = Double(v.trimmingCharacters(in: .whitespaces)), range.contains(x) else {
                return "must be a number from \(range.lowerBound) to \(range.upperBound), got '\(v)'"
            }
            s[keyPath: path] = x
            return nil
        }, format: { "\($0[keyPath: path])" })
    }

    public static func choice<C: RawRepresentable & CaseIterable & Sendable>(_ name: String, _ doc: String, _ path: WritableKeyPath<Settings, C> & Sendable) -> SettingKey
    where C.RawValue == String {
        SettingKey(name, doc, parse: { s, v in
            guard let c = C(rawValue: v.trimmingCharacters(in: .whitespaces)) else {
                return "must be one of \(C.allCases.map(\.rawValue).joined(separator: ", ")), got '\(v)'"
            }
            s[keyPath: path] = c
            return nil
        }, format: { $0[keyPath: path].rawValue })
    }

    public static func text(_ name: String, _ doc: String, _ path: WritableKeyPath<Settings, String> & Sendable) -> SettingKey {
        SettingKey(name, doc, parse: { s, v in
            s[keyPath: path] = v
            return nil
        }, format: { $0[keyPath: path] })
    }

    /// Whether `key` names this setting (its name or an alias; `-` and `_` are the same, so a
    /// flag `--max-length` names `max_length`).
    public func matches(_ key: String) -> Bool {
        let k = key.replacingOccurrences(of: "-", with: "_")
        return k == name || aliases.contains(k)
    }
}

/// A problem with one setting's value, naming the key.
public struct SettingError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let problem: String
    public init(key: String, problem: String) {
        self.key = key
        self.problem = problem
    }
    public var description: String { "\(key): \(problem)" }
}

/// A model's settings: one struct, its defaults in `init()`, and its key table.
public protocol ModelSettings: Sendable, Equatable {
    init()
    static var keys: [SettingKey<Self>] { get }
    /// Checks across keys (a width that heads must divide); nil when the settings are usable.
    func problem() -> SettingError?
}

extension ModelSettings {
    public func problem() -> SettingError? { nil }

    public static func key(_ name: String) -> SettingKey<Self>? { keys.first { $0.matches(name) } }

    /// Sets one key from its text; the error names the key and what it accepts.
    public mutating func set(_ name: String, _ value: String) throws(SettingError) {
        guard let key = Self.key(name) else {
            throw SettingError(key: name, problem: "unknown setting; known: \(Self.keys.map(\.name).joined(separator: ", "))")
        }
        if let problem = key.parse(&self, value) { throw SettingError(key: key.name, problem: "\(problem) (\(key.doc))") }
    }

    /// The defaults with `values` applied (in key order, so a shorthand and its parts resolve
    /// the same way every time), then checked across keys.
    public init(values: [String: String]) throws(SettingError) {
        self.init()
        for (name, value) in values.sorted(by: { $0.key < $1.key }) { try set(name, value) }
        if let problem = problem() { throw problem }
    }

    /// Every stored setting as text: a snapshot's hyper-parameters.
    public var hyperParameters: [String: String] {
        var out: [String: String] = [:]
        for key in Self.keys where key.stored { out[key.name] = key.format(self) }
        return out
    }

    /// Reads a snapshot's hyper-parameters. A key the snapshot lacks (written before the setting
    /// existed) takes its default; a key it holds with a value the table refuses is an error.
    /// Keys the table does not know (annotations such as `init`) are ignored.
    public init(hyperParameters p: [String: String], path: String) throws {
        self.init()
        for key in Self.keys where key.stored {
            guard let value = p[key.name] else { continue }
            if let problem = key.parse(&self, value) {
                throw ModelError(.badSnapshot, "snapshot \(path): hyper-parameter '\(key.name)' \(problem); retrain the model")
            }
        }
        if let problem = problem() {
            throw ModelError(.badSnapshot, "snapshot \(path): \(problem); retrain the model")
        }
    }

    /// Name, aliases, default and doc of every key, for help texts and `streamrec config keys`.
    public static var keyTable: [(name: String, aliases: [String], defaultValue: String, doc: String)] {
        let defaults = Self()
        return keys.map { ($0.name, $0.aliases, $0.stored ? $0.format(defaults) : "", $0.doc) }
    }
}

/// The settings every trainer of the shared epoch loop has (SASRec, BERT4Rec, DiffuRec): one
/// key table for them, so their meaning, ranges and documentation are written once.
public protocol TrainingLoopSettings: ModelSettings {
    var learningRate: Float { get set }
    var weightDecay: Float { get set }
    var batchSize: Int { get set }
    var epochs: Int { get set }
    var evalEvery: Int { get set }
    var patience: Int { get set }
    var clipNorm: Float { get set }
    var seed: UInt64 { get set }
}

/// Models whose item table can start from text (LLM2SASRec, LLM2BERT4Rec): how strongly the
/// text-started rows are held near that start while training (TextAnchor).
public protocol TextStartSettings: ModelSettings {
    var textAnchor: Float { get set }
}

extension SettingKey where Settings: TextStartSettings {
    static func textAnchor() -> SettingKey {
        .float("text_anchor", "llm2 kinds: strength of the pull of each text-started item row back to its start (L2-SP up to one common scale alpha: gradient += text_anchor * (row - alpha * start)); 0 = a start only",
               0...1e6, \.textAnchor)
    }
}

extension SettingKey where Settings: TrainingLoopSettings {
    /// learning_rate (alias lr), weight_decay, batch_size, epochs, eval_every, patience,
    /// clip_norm, seed; `batchDoc` says what a batch holds for this model.
    static func trainingLoop(batchDoc: String = "sequences per batch") -> [SettingKey] {
        [.float("learning_rate", "Adam learning rate", 1e-7...1, \.learningRate, aliases: ["lr"]),
         .float("weight_decay", "Adam L2 weight decay", 0...1, \.weightDecay),
         .int("batch_size", batchDoc, 1...1_000_000, \.batchSize),
         .int("epochs", "training epochs", 1...1_000_000, \.epochs),
         .int("eval_every", "validate every N epochs", 1...1_000_000, \.evalEvery),
         .int("patience", "stop after N validations without improvement", 1...1_000_000, \.patience),
         .float("clip_norm", "global gradient-norm clip (0 = off)", 0...1e6, \.clipNorm),
         .seed("seed", "random seed", \.seed)]
    }

    /// ffn_width: stored as the width the model runs (0 resolves to the model's default).
    static func ffnWidth(_ doc: String, _ path: WritableKeyPath<Settings, Int> & Sendable,
                         resolved: @escaping @Sendable (Settings) -> Int) -> SettingKey {
        SettingKey("ffn_width", doc, parse: { s, v in
            guard let n = Int(v), (0...65_536).contains(n) else { return "must be an integer from 0 to 65536, got '\(v)'" }
            s[keyPath: path] = n
            return nil
        }, format: { "\(resolved($0))" })
    }
}
