import Foundation
import Testing
@testable import StreamRecStorage

@Suite struct KeyValueStoreTests {
    @Test func putGetDeleteRoundTrip() throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            #expect(try store.get([UInt8]("missing")) == nil)

            var batch = WriteBatch()
            #expect(batch.isEmpty)
            batch.put([UInt8]("a"), [1, 2, 3])
            batch.put([0, 255, 0], [])          // binary key with NULs, empty value
            batch.put([UInt8]("b"), [9])
            batch.delete([UInt8]("b"))          // later operations in a batch win
            #expect(batch.count == 4)
            #expect(!batch.isEmpty)
            try store.write(batch)

            #expect(try store.get([UInt8]("a")) == [1, 2, 3])
            #expect(try store.get([0, 255, 0]) == [])
            #expect(try store.get([UInt8]("b")) == nil)

            var deletion = WriteBatch()
            deletion.delete([UInt8]("a"))
            try store.write(deletion, sync: false)
            #expect(try store.get([UInt8]("a")) == nil)
            #expect(try store.get([0, 255, 0]) == [])
        }
    }

    @Test func dataSurvivesCloseAndReopen() throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path, cacheBytes: 0)
            try putRaw(store, "k", [42])
            store.close()
            let reopened = try KeyValueStore(path: path)
            #expect(try reopened.get([UInt8]("k")) == [42])
        }
    }

    @Test func scanVisitsPrefixInOrderAndStopsWhenBodyReturnsFalse() throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            var batch = WriteBatch()
            // Inserted out of order, with neighbours on both sides of the prefix range.
            for key in ["a/3", "b/1", "a/1", "a/5", "a", "a/2", "a/4", "a0"] {
                batch.put([UInt8](key), [UInt8]("v" + key))
            }
            try store.write(batch)

            var all: [String] = []
            try store.scan(prefix: [UInt8]("a/")) { key, value in
                #expect(value == [UInt8]("v") + key)
                all.append(String(decoding: key, as: UTF8.self))
                return true
            }
            #expect(all == ["a/1", "a/2", "a/3", "a/4", "a/5"])

            var visited: [String] = []
            try store.scan(prefix: [UInt8]("a/")) { key, _ in
                visited.append(String(decoding: key, as: UTF8.self))
                return visited.count < 3
            }
            #expect(visited == ["a/1", "a/2", "a/3"])

            var none = 0
            try store.scan(prefix: [UInt8]("zz")) { _, _ in
                none += 1
                return true
            }
            #expect(none == 0)
        }
    }

    @Test func scanFromResumesInsideThePrefix() throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            var batch = WriteBatch()
            for key in ["p/a", "p/b", "p/c", "q/a"] { batch.put([UInt8](key), []) }
            try store.write(batch)
            var visited: [String] = []
            try store.scan(prefix: [UInt8]("p/"), from: [UInt8]("p/b")) { key, _ in
                visited.append(String(decoding: key, as: UTF8.self))
                return true
            }
            #expect(visited == ["p/b", "p/c"])
        }
    }

    @Test func scanRethrowsErrorsFromBody() throws {
        struct Stop: Error {}
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            try putRaw(store, "x/1", [])
            #expect(throws: Stop.self) {
                try store.scan(prefix: [UInt8]("x/")) { _, _ in throw Stop() }
            }
            // The iterator was released: the store still works.
            #expect(try store.get([UInt8]("x/1")) == [])
        }
    }

    @Test func secondOpenOfSamePathIsLocked() throws {
        try withTemporaryStatePath { path in
            let first = try KeyValueStore(path: path)
            try putRaw(first, "k", [1])
            let error = #expect(throws: StorageError.self) { _ = try KeyValueStore(path: path) }
            #expect(error?.code == .locked)
            #expect(error?.message.contains("\(path)/LOCK") == true)
            #expect(error?.message.contains("--state") == true)

            // Closing releases the lock.
            first.close()
            let second = try KeyValueStore(path: path)
            #expect(try second.get([UInt8]("k")) == [1])
        }
    }

    @Test func levelDBStatusStringsMapToCodes() {
        // The cross-process form of the lock error (fcntl EAGAIN), which one process cannot produce.
        let other = StorageError.fromLevelDB(
            "IO error: lock /s/LOCK: Resource temporarily unavailable", fallback: .openFailed, path: "/s",
            action: "opening")
        #expect(other.code == .locked)
        #expect(other.message.hasPrefix("another streamrec process"))
        #expect(other.message.contains("/s/LOCK; stop it or use another --state directory"))

        let corrupt = StorageError.fromLevelDB(
            "Corruption: bad block contents", fallback: .readFailed, path: "/s", action: "reading from")
        #expect(corrupt.code == .corrupt)
        #expect(corrupt.message.contains("bad block contents"))

        let io = StorageError.fromLevelDB(
            "IO error: /s/000005.log: No space left on device", fallback: .writeFailed, path: "/s",
            action: "writing to")
        #expect(io.code == .writeFailed)
        #expect(io.description.hasPrefix("writeFailed: writing to /s failed"))
    }

    @Test func openOnARegularFileFails() throws {
        try withTemporaryStatePath { path in
            let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: path, contents: Data([1])))
            let error = #expect(throws: StorageError.self) { _ = try KeyValueStore(path: path) }
            #expect(error?.code == .openFailed)
            #expect(error?.message.contains(path) == true)
        }
    }

    @Test func closeIsIdempotentAndLaterCallsThrow() throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            store.close()
            store.close()
            let readError = #expect(throws: StorageError.self) { _ = try store.get([UInt8]("k")) }
            #expect(readError?.code == .readFailed)
            let writeError = #expect(throws: StorageError.self) { try putRaw(store, "k", []) }
            #expect(writeError?.code == .writeFailed)
            let scanError = #expect(throws: StorageError.self) {
                try store.scan(prefix: []) { _, _ in true }
            }
            #expect(scanError?.code == .readFailed)
        }
    }

    @Test func concurrentReadersAndWritersShareOneStore() async throws {
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("streamrec-storage-tests-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try KeyValueStore(path: root.path)
        // Writers use disjoint keys; every reader must see either nothing or a complete value.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for i in 0..<50 {
                        var batch = WriteBatch()
                        batch.put([UInt8]("w\(writer)/\(i)"), [UInt8(writer), UInt8(i)])
                        try store.write(batch, sync: false)
                    }
                }
            }
            for _ in 0..<2 {
                group.addTask {
                    for i in 0..<50 {
                        if let value = try store.get([UInt8]("w0/\(i)")) { #expect(value == [0, UInt8(i)]) }
                    }
                }
            }
            try await group.waitForAll()
        }
        var total = 0
        try store.scan(prefix: [UInt8]("w")) { _, _ in
            total += 1
            return true
        }
        #expect(total == 200)
    }
}
