import Testing
@testable import StreamRecStorage

@Suite struct VocabularyTests {
    @Test func idsAreDenseFromOneAndIdempotent() throws {
        try withTemporaryStatePath { path in
            let vocabulary = try Vocabulary(store: try KeyValueStore(path: path))
            #expect(vocabulary.count == 0)
            #expect(!vocabulary.hasPending)
            #expect(vocabulary.idOrAssign("apple") == 1)
            #expect(vocabulary.idOrAssign("banana") == 2)
            #expect(vocabulary.idOrAssign("apple") == 1)
            #expect(vocabulary.idOrAssign("") == 3)
            #expect(vocabulary.count == 3)
            #expect(vocabulary.id(for: "banana") == 2)
            #expect(vocabulary.id(for: "cherry") == nil)
            #expect(vocabulary.external(for: 0) == nil)    // padding, never assigned
            #expect(vocabulary.external(for: 1) == "apple")
            #expect(vocabulary.external(for: 3) == "")
            #expect(vocabulary.external(for: 4) == nil)
        }
    }

    @Test func pendingIdsAreNotPersistedUntilStagedAndCommitted() throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            let sessions = SessionStore(store: store, policy: SessionPolicy())
            let vocabulary = try Vocabulary(store: store)
            #expect(vocabulary.idOrAssign("x") == 1)
            #expect(vocabulary.idOrAssign("y") == 2)
            #expect(vocabulary.hasPending)
            #expect(try Vocabulary(store: store).count == 0)

            // Abandoned batch: staged, never written. The ids stay pending.
            var abandoned = WriteBatch()
            vocabulary.stagePending(into: &abandoned)
            #expect(abandoned.count == 4)                  // two keys per id
            #expect(vocabulary.hasPending)
            #expect(try Vocabulary(store: store).count == 0)

            // The next batch carries them, together with a session that uses them.
            #expect(vocabulary.idOrAssign("z") == 3)
            var batch = WriteBatch()
            vocabulary.stagePending(into: &batch)
            #expect(batch.count == 6)
            var s = Session(user: "u")
            s.append(item: vocabulary.idOrAssign("z"), timestampMs: 1, maxItems: 10)
            sessions.stage(s, into: &batch)
            // Assigned after staging: not in this batch, so it must stay pending afterwards.
            #expect(vocabulary.idOrAssign("late") == 4)
            try sessions.commit(batch, sessions: [s])
            vocabulary.didCommitPending()
            #expect(vocabulary.hasPending)

            let reloaded = try Vocabulary(store: store)
            #expect(reloaded.count == 3)
            #expect(reloaded.id(for: "x") == 1)
            #expect(reloaded.id(for: "z") == 3)
            #expect(reloaded.external(for: 2) == "y")
            #expect(reloaded.id(for: "late") == nil)

            var rest = WriteBatch()
            vocabulary.stagePending(into: &rest)
            #expect(rest.count == 2)
            try store.write(rest)
            vocabulary.didCommitPending()
            #expect(!vocabulary.hasPending)
            #expect(try Vocabulary(store: store).external(for: 4) == "late")
        }
    }

    @Test func assignAndPersistSurvivesReopen() throws {
        try withTemporaryStatePath { path in
            do {
                let store = try KeyValueStore(path: path)
                let vocabulary = try Vocabulary(store: store)
                #expect(try vocabulary.assignAndPersist(["a", "b", "c", "b"]) == [1, 2, 3, 2])
                #expect(!vocabulary.hasPending)
                store.close()
            }
            let store = try KeyValueStore(path: path)
            let vocabulary = try Vocabulary(store: store)
            #expect(vocabulary.count == 3)
            #expect(vocabulary.id(for: "c") == 3)
            #expect(vocabulary.external(for: 1) == "a")
            // Known ids come back unchanged; only "d" is new.
            #expect(try vocabulary.assignAndPersist(["b", "d", "a"]) == [2, 4, 1])
            #expect(try store.get([UInt8]("v/i/0000000004")) == [UInt8]("d"))
            #expect(try store.get([UInt8]("v/e/d")) == [4, 0, 0, 0])
            #expect(try Vocabulary(store: store).count == 4)
        }
    }

    @Test(arguments: [
        // Directions disagree.
        [("v/e/a", [UInt8]([1, 0, 0, 0])), ("v/i/0000000001", [UInt8]("b"))],
        // Gap in ids.
        [("v/e/a", [1, 0, 0, 0]), ("v/i/0000000001", [UInt8]("a")),
         ("v/e/c", [3, 0, 0, 0]), ("v/i/0000000003", [UInt8]("c"))],
        // Id without its reverse entry.
        [("v/i/0000000001", [UInt8]("a"))],
        // Reverse entry pointing past the ids.
        [("v/e/a", [2, 0, 0, 0]), ("v/i/0000000001", [UInt8]("a"))],
        // Id 0 is never assigned.
        [("v/e/a", [0, 0, 0, 0]), ("v/i/0000000000", [UInt8]("a"))],
        // Wrong value width.
        [("v/e/a", [1, 0, 0]), ("v/i/0000000001", [UInt8]("a"))],
        // Malformed id key.
        [("v/e/a", [1, 0, 0, 0]), ("v/i/1", [UInt8]("a"))],
    ])
    func inconsistentEntriesAreCorrupt(entries: [(String, [UInt8])]) throws {
        try withTemporaryStatePath { path in
            let store = try KeyValueStore(path: path)
            for (key, value) in entries { try putRaw(store, key, value) }
            let error = #expect(throws: StorageError.self) { _ = try Vocabulary(store: store) }
            #expect(error?.code == .corrupt)
            #expect(error?.message.contains("vocabulary") == true)
        }
    }
}
