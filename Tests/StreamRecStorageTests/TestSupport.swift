// Shared helpers: every test gets its own real LevelDB directory under the system temp dir.

import Foundation
import Testing
@testable import StreamRecStorage

/// Runs body with a path that does not exist yet (nested, so directory creation is exercised)
/// inside a fresh temp directory, and removes the whole tree afterwards.
func withTemporaryStatePath<R>(_ body: (String) throws -> R) throws -> R {
    let root = FileManager.default.temporaryDirectory
        .appendingPathComponent("streamrec-storage-tests-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: root) }
    return try body(root.appendingPathComponent("state/db").path)
}

extension Array where Element == UInt8 {
    /// Test shorthand: UTF-8 bytes of a string literal.
    init(_ string: String) { self = Array(string.utf8) }
}

/// Writes raw bytes under a key, bypassing the typed stores, to plant corrupt data.
func putRaw(_ store: KeyValueStore, _ key: String, _ value: [UInt8]) throws {
    var batch = WriteBatch()
    batch.put([UInt8](key), value)
    try store.write(batch)
}
