import Foundation
import Testing
@testable import StreamRecStorage

/// Opens a KeyValueStore + SessionStore on a path; both are closed by the caller's scope end.
private func openSessions(_ path: String, _ policy: SessionPolicy = SessionPolicy()) throws -> SessionStore {
    SessionStore(store: try KeyValueStore(path: path), policy: policy)
}

private func session(_ user: String, items: [UInt32], lastSeenMs: Int64) -> Session {
    Session(user: user, events: items.map { SessionEvent(item: $0, timestampMs: lastSeenMs) }, lastSeenMs: lastSeenMs)
}

@Suite struct SessionTests {
    @Test func appendKeepsTheNewestWithinMaxItems() {
        var s = Session(user: "u")
        for item in UInt32(1)...5 { s.append(item: item, timestampMs: Int64(item) * 10, maxItems: 3) }
        #expect(s.items == [3, 4, 5])
        #expect(s.events.first == SessionEvent(item: 3, timestampMs: 30))
        #expect(s.lastSeenMs == 50)

        // A late event is kept in arrival order but never moves lastSeenMs back.
        s.append(item: 6, timestampMs: 5, maxItems: 3)
        #expect(s.items == [4, 5, 6])
        #expect(s.lastSeenMs == 50)

        s.append(item: 7, timestampMs: 60, maxItems: 0)
        #expect(s.items.isEmpty)
        #expect(s.lastSeenMs == 60)
    }

    @Test func sessionEventIsCodable() throws {
        let event = SessionEvent(item: 7, timestampMs: -3)
        let decoded = try JSONDecoder().decode(SessionEvent.self, from: JSONEncoder().encode(event))
        #expect(decoded == event)
    }

    @Test func policyDefaults() {
        let policy = SessionPolicy()
        #expect(policy.maxItems == 200)
        #expect(policy.idleTTLMs == 2_592_000_000)
        #expect(policy.cacheCapacity == 100_000)
    }
}

@Suite struct SessionStoreTests {
    @Test func encodingRoundTripAndExactLayout() throws {
        let original = Session(
            user: "ü/ser", // any UTF-8, including the separator
            events: [SessionEvent(item: 1, timestampMs: -1), SessionEvent(item: .max, timestampMs: .max),
                     SessionEvent(item: 0x0102_0304, timestampMs: .min)],
            lastSeenMs: 0x0102_0304_0506_0708)
        let key = SessionStore.sessionKey(original.user)
        let bytes = SessionStore.encode(original)
        #expect(bytes.count == 1 + 4 + 8 + 4 + 3 * 12)
        // Format 2, partition unknown (-1), lastSeenMs, count.
        #expect(Array(bytes[0..<17]) == [2, 0xFF, 0xFF, 0xFF, 0xFF, 8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0, 0])
        #expect(Array(bytes[41..<45]) == [4, 3, 2, 1])
        #expect(try SessionStore.decodeSession(bytes, key: key) == original)

        var placed = original
        placed.partition = 5
        let placedBytes = SessionStore.encode(placed)
        #expect(Array(placedBytes[1..<5]) == [5, 0, 0, 0])
        #expect(try SessionStore.decodeSession(placedBytes, key: key) == placed)

        // Format 1 (before the changelog) still reads, with the partition unknown.
        var v1: [UInt8] = [1] + Array(bytes[5...])
        #expect(try SessionStore.decodeSession(v1, key: key) == original)
        v1.removeLast()
        #expect(throws: StorageError.self) { _ = try SessionStore.decodeSession(v1, key: key) }

        let empty = Session(user: "e")
        #expect(try SessionStore.decodeSession(SessionStore.encode(empty), key: SessionStore.sessionKey("e")) == empty)
    }

    @Test(arguments: [
        [UInt8](),                                  // empty
        [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],     // unknown format
        [2, 0, 0, 0],                               // truncated format-2 header
        [1, 0, 0, 0],                               // truncated header
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],     // declares one event, has none
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], // trailing byte
    ])
    func corruptValueThrowsCorruptNamingTheKey(value: [UInt8]) throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path)
            try putRaw(sessions.store, "s/bob", value)
            let error = #expect(throws: StorageError.self) { _ = try sessions.session(for: "bob", nowMs: 0) }
            #expect(error?.code == .corrupt)
            #expect(error?.message.contains("s/bob") == true)
            let dumpError = #expect(throws: StorageError.self) { try sessions.forEachSession { _ in } }
            #expect(dumpError?.code == .corrupt)
        }
    }

    @Test func committedSessionIsReadBackBoundedAfterReopen() throws {
        try withTemporaryStatePath { path in
            do {
                let sessions = try openSessions(path, SessionPolicy(maxItems: 4))
                var s = try sessions.session(for: "alice", nowMs: 0)
                #expect(s == Session(user: "alice"))
                for item in UInt32(1)...10 { s.append(item: item, timestampMs: Int64(item), maxItems: 4) }
                var batch = WriteBatch()
                sessions.stage(s, into: &batch)
                try sessions.commit(batch, sessions: [s])
                #expect(try sessions.session(for: "alice", nowMs: 10).items == [7, 8, 9, 10])
            }
            // Reopen (the store above was released, which closed it) with a smaller window:
            // reads trim to the current policy, keeping the newest.
            let reopened = try openSessions(path, SessionPolicy(maxItems: 2))
            let s = try reopened.session(for: "alice", nowMs: 10)
            #expect(s.items == [9, 10])
            #expect(s.lastSeenMs == 10)
        }
    }

    @Test func idleSessionReadsEmptyAndIsSwept() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path, SessionPolicy(idleTTLMs: 1_000))
            var batch = WriteBatch()
            let stale = session("alice", items: [1, 2], lastSeenMs: 1_000)
            let edge = session("bob", items: [3], lastSeenMs: 4_500)
            let fresh = session("carol", items: [4], lastSeenMs: 5_000)
            for s in [stale, edge, fresh] { sessions.stage(s, into: &batch) }
            try sessions.commit(batch, sessions: [stale, edge, fresh])

            // Idle 4_500 > TTL: empty. Idle exactly the TTL is not "longer than" it.
            #expect(try sessions.session(for: "alice", nowMs: 5_500) == Session(user: "alice"))
            #expect(try sessions.session(for: "bob", nowMs: 5_500) == edge)
            #expect(try sessions.session(for: "carol", nowMs: 5_500) == fresh)
            // The same committed session is live again from an earlier clock: TTL is read-time.
            #expect(try sessions.session(for: "alice", nowMs: 1_500) == stale)

            #expect(try sessions.sweepExpired(nowMs: 5_500, limit: 10) == 1)
            #expect(try sessions.store.get(SessionStore.sessionKey("alice")) == nil)
            #expect(try sessions.sessionCount() == 2)
            // Swept sessions leave the cache too: an earlier clock cannot resurrect it.
            #expect(try sessions.session(for: "alice", nowMs: 1_500) == Session(user: "alice"))
            #expect(try sessions.session(for: "bob", nowMs: 5_500) == edge)
            #expect(try sessions.sweepExpired(nowMs: 5_500, limit: 10) == 0)
            #expect(try sessions.sessionCount() == 2)
        }
    }

    @Test func sweepDeletesAtMostLimitPerCall() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path, SessionPolicy(idleTTLMs: 100))
            var batch = WriteBatch()
            for i in 0..<7 { sessions.stage(session("old\(i)", items: [1], lastSeenMs: 0), into: &batch) }
            sessions.stage(session("new", items: [1], lastSeenMs: 1_000), into: &batch)
            try sessions.commit(batch, sessions: [])
            var deleted: [Int] = []
            for _ in 0..<4 { deleted.append(try sessions.sweepExpired(nowMs: 1_000, limit: 3)) }
            #expect(deleted == [3, 3, 1, 0])
            #expect(try sessions.sessionCount() == 1)
            #expect(try sessions.sweepExpired(nowMs: 1_000, limit: 0) == 0)
        }
    }

    @Test func sweepWorkIsBoundedAndResumesAroundTheKeyspace() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path, SessionPolicy(idleTTLMs: 100))
            var batch = WriteBatch()
            // 40 fresh sessions sort before the 2 expired ones.
            for i in 0..<40 {
                sessions.stage(session(String(format: "f%02d", i), items: [1], lastSeenMs: 1_000), into: &batch)
            }
            for user in ["z0", "z1"] { sessions.stage(session(user, items: [1], lastSeenMs: 0), into: &batch) }
            try sessions.commit(batch, sessions: [])

            // limit 1 examines at most 16 sessions per call, so the first calls find nothing yet.
            var deleted: [Int] = []
            for _ in 0..<5 { deleted.append(try sessions.sweepExpired(nowMs: 1_000, limit: 1)) }
            #expect(deleted == [0, 0, 1, 1, 0])
            #expect(try sessions.sessionCount() == 40)

            // A new expired session before the cursor is found after wrapping around.
            var late = WriteBatch()
            sessions.stage(session("a-old", items: [1], lastSeenMs: 0), into: &late)
            try sessions.commit(late, sessions: [])
            var total = 0
            for _ in 0..<4 { total += try sessions.sweepExpired(nowMs: 1_000, limit: 1) }
            #expect(total == 1)
            #expect(try sessions.store.get(SessionStore.sessionKey("a-old")) == nil)
        }
    }

    @Test func sweepResumesWhereAWrappedCallStopped() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path, SessionPolicy(idleTTLMs: 100))
            var batch = WriteBatch()
            for i in 0..<20 {
                sessions.stage(session(String(format: "f%02d", i), items: [1], lastSeenMs: 1_000), into: &batch)
            }
            try sessions.commit(batch, sessions: [])
            // Budget 16 per call: f00-f15, then f16-f19 plus a wrap over f00-f11, stopping at f12.
            #expect(try sessions.sweepExpired(nowMs: 1_000, limit: 1) == 0)
            #expect(try sessions.sweepExpired(nowMs: 1_000, limit: 1) == 0)

            // Only reachable within budget if the next call resumes at f12, not at the start.
            var late = WriteBatch()
            sessions.stage(session("f19x", items: [1], lastSeenMs: 0), into: &late)
            try sessions.commit(late, sessions: [])
            #expect(try sessions.sweepExpired(nowMs: 1_000, limit: 1) == 1)
            #expect(try sessions.sessionCount() == 20)
        }
    }

    @Test func offsetIsCommittedAtomicallyWithTheSession() throws {
        try withTemporaryStatePath { path in
            do {
                let sessions = try openSessions(path)
                var s = try sessions.session(for: "alice", nowMs: 100)
                s.append(item: 7, timestampMs: 100, maxItems: 200)
                var batch = WriteBatch()
                sessions.stage(s, into: &batch)
                sessions.stageOffset(topic: "clicks", partition: 3, nextOffset: 42, into: &batch)
                try sessions.commit(batch, sessions: [s])

                // A second micro-batch that is staged but abandoned (e.g. processing failed).
                var t = try sessions.session(for: "bob", nowMs: 200)
                t.append(item: 8, timestampMs: 200, maxItems: 200)
                var abandoned = WriteBatch()
                sessions.stage(t, into: &abandoned)
                sessions.stageOffset(topic: "clicks", partition: 4, nextOffset: 99, into: &abandoned)
                sessions.store.close()
            }
            let reopened = try openSessions(path)
            #expect(try reopened.session(for: "alice", nowMs: 100).items == [7])
            #expect(try reopened.nextOffset(topic: "clicks", partition: 3) == 42)
            #expect(try reopened.session(for: "bob", nowMs: 200) == Session(user: "bob"))
            #expect(try reopened.nextOffset(topic: "clicks", partition: 4) == nil)
            #expect(try reopened.store.get(SessionStore.sessionKey("bob")) == nil)
        }
    }

    @Test func offsetsKeyLayoutAndListing() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path)
            #expect(try sessions.nextOffset(topic: "clicks", partition: 0) == nil)
            var batch = WriteBatch()
            sessions.stageOffset(topic: "views", partition: 0, nextOffset: 5, into: &batch)
            sessions.stageOffset(topic: "clicks", partition: 10, nextOffset: 1 << 40, into: &batch)
            sessions.stageOffset(topic: "clicks", partition: 2, nextOffset: 7, into: &batch)
            sessions.stageOffset(topic: "clicks", partition: 2, nextOffset: 8, into: &batch) // last wins
            try sessions.commit(batch, sessions: [])

            #expect(try sessions.store.get([UInt8]("o/clicks/0000000002")) == [8, 0, 0, 0, 0, 0, 0, 0])
            #expect(try sessions.nextOffset(topic: "clicks", partition: 10) == 1 << 40)
            let all = try sessions.allOffsets()
            #expect(all.map { "\($0.topic):\($0.partition)=\($0.nextOffset)" }
                        == ["clicks:2=8", "clicks:10=1099511627776", "views:0=5"])

            try putRaw(sessions.store, "o/clicks/0000000003", [1, 2, 3])
            let error = #expect(throws: StorageError.self) { _ = try sessions.nextOffset(topic: "clicks", partition: 3) }
            #expect(error?.code == .corrupt)
            #expect(error?.message.contains("o/clicks/0000000003") == true)
            try putRaw(sessions.store, "o/clicks/0000000003", [0, 0, 0, 0, 0, 0, 0, 0])
            try putRaw(sessions.store, "o/junk", [0, 0, 0, 0, 0, 0, 0, 0])
            let listError = #expect(throws: StorageError.self) { _ = try sessions.allOffsets() }
            #expect(listError?.code == .corrupt)
            #expect(listError?.message.contains("o/junk") == true)
        }
    }

    @Test func cacheNeverShowsStagedButUncommittedSessions() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path)
            // Never committed at all: still empty after staging.
            var neverCommitted = WriteBatch()
            var ghost = try sessions.session(for: "ghost", nowMs: 1)
            ghost.append(item: 1, timestampMs: 1, maxItems: 200)
            sessions.stage(ghost, into: &neverCommitted)
            #expect(try sessions.session(for: "ghost", nowMs: 1) == Session(user: "ghost"))

            var v1 = Session(user: "alice")
            v1.append(item: 1, timestampMs: 10, maxItems: 200)
            var first = WriteBatch()
            sessions.stage(v1, into: &first)
            try sessions.commit(first, sessions: [v1])
            #expect(try sessions.session(for: "alice", nowMs: 10) == v1)

            var v2 = try sessions.session(for: "alice", nowMs: 20)
            v2.append(item: 2, timestampMs: 20, maxItems: 200)
            var second = WriteBatch()
            sessions.stage(v2, into: &second)
            #expect(try sessions.session(for: "alice", nowMs: 20) == v1)   // staged only

            try sessions.commit(second, sessions: [v2])
            #expect(try sessions.session(for: "alice", nowMs: 20) == v2)
            #expect(try sessions.session(for: "alice", nowMs: 20).items == [1, 2])
        }
    }

    @Test func cacheServesHitsAndEvictsLeastRecentlyUsed() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path, SessionPolicy(cacheCapacity: 1))
            let alice = session("alice", items: [1], lastSeenMs: 0)
            var batch = WriteBatch()
            sessions.stage(alice, into: &batch)
            try sessions.commit(batch, sessions: [alice])

            // Damage the stored value behind the cache: a hit never reaches LevelDB.
            try putRaw(sessions.store, "s/alice", [0xFF])
            #expect(try sessions.session(for: "alice", nowMs: 0) == alice)

            // Committing bob evicts alice (capacity 1), so the next read goes to LevelDB.
            let bob = session("bob", items: [2], lastSeenMs: 0)
            var other = WriteBatch()
            sessions.stage(bob, into: &other)
            try sessions.commit(other, sessions: [bob])
            let error = #expect(throws: StorageError.self) { _ = try sessions.session(for: "alice", nowMs: 0) }
            #expect(error?.code == .corrupt)
        }
    }

    @Test func countAndDumpSeeOnlySessions() throws {
        try withTemporaryStatePath { path in
            let sessions = try openSessions(path, SessionPolicy(idleTTLMs: 10))
            let vocabulary = try Vocabulary(store: sessions.store)
            var batch = WriteBatch()
            _ = vocabulary.idOrAssign("item-a")
            vocabulary.stagePending(into: &batch)
            sessions.stageOffset(topic: "t", partition: 0, nextOffset: 1, into: &batch)
            let all = [session("c", items: [3], lastSeenMs: 0), session("a", items: [1, 2], lastSeenMs: 99),
                       session("b", items: [], lastSeenMs: 5)]
            for s in all { sessions.stage(s, into: &batch) }
            try sessions.commit(batch, sessions: all)
            vocabulary.didCommitPending()

            #expect(try sessions.sessionCount() == 3)
            var dumped: [Session] = []
            try sessions.forEachSession { dumped.append($0) }
            // Raw view: in key order, idle ones included.
            #expect(dumped == all.sorted { $0.user < $1.user })
        }
    }
}
