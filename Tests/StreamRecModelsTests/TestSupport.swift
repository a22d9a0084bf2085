import Foundation
@testable import StreamRecModels

/// A vocabulary like the service's: ids 1, 2, 3... in the order items are first asked for.
final class TestVocabulary {
    private(set) var idOf: [String: ItemID] = [:]
    private(set) var nameOf: [ItemID: String] = [:]

    func id(_ item: String) -> ItemID {
        if let id = idOf[item] { return id }
        let id = ItemID(idOf.count + 1)
        idOf[item] = id
        nameOf[id] = item
        return id
    }

    func names(_ answer: [ScoredItem]) -> [String] { answer.map { nameOf[$0.item] ?? "?\($0.item)" } }
}

/// A fresh directory under the system temporary directory, removed when the value goes away.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-models-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `text` to `name` and returns its path.
    @discardableResult
    func file(_ name: String, _ text: String) throws -> String {
        let path = path(name)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }
}

/// The error `body` throws, which must be a ModelError.
func modelError(_ body: () throws -> Void) -> ModelError? {
    do {
        try body()
        return nil
    } catch let error as ModelError {
        return error
    } catch {
        return ModelError(.unsupported, "not a ModelError: \(error)")
    }
}
