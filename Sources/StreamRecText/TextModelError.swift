import Foundation

/// Why a text model (tokenizer vocabulary, safetensors weights, config.json) could not be
/// loaded or used. Same shape as `StreamRecModels.ModelError`: a stable code and a message that
/// says what to do about it.
public struct TextModelError: Error, CustomStringConvertible, LocalizedError, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A model file that is not there (run `make setup`, or point the loader at the folder).
        case missingFile
        /// A file that is there but corrupt or truncated: a bad safetensors header, a tensor whose
        /// byte range does not fit its shape, an empty vocabulary.
        case badFile
        /// A config.json that cannot be parsed or describes an impossible shape.
        case badConfig
        /// Something this build does not implement (a dtype, an activation, a model family).
        case unsupported
        /// A tensor is absent from the weights or has another shape than config.json implies.
        case shapeMismatch
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
    public var errorDescription: String? { description }
}
