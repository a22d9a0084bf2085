// Per-user sessions and Kafka partition offsets, kept in one LevelDB database so a
// micro-batch's session updates and the offsets it consumed commit in one atomic write.
//
// Key layout (all keys are bytes; text parts are UTF-8):
//   s/<user>                               -> session value (below)
//   o/<topic>/<partition, 10 digits>       -> next offset to consume, Int64 little endian (8 bytes)
//   v/e/<external item id>                 -> dense item id, UInt32 little endian   (Vocabulary.swift)
//   v/i/<dense item id, 10 digits>         -> external item id, UTF-8              (Vocabulary.swift)
// Numbers inside keys are zero padded so bytewise order equals numeric order.
//
// Session value, little endian:
//   UInt8 format (= 2) | Int32 partition | Int64 lastSeenMs | UInt32 count | count x (UInt32 item, Int64 timestampMs)
//   partition: the input partition the user's events arrive on (-1 = unknown); it decides which
//   sessions this instance may sweep and which changelog partition a session belongs to.
//   Format 1 (written before the changelog existed) has no partition field and reads as unknown.
// Events are stored oldest first. Any value that does not decode exactly throws .corrupt.
import StreamRecCollections

public struct SessionEvent: Sendable, Equatable, Codable {
    public var item: UInt32
    public var timestampMs: Int64

    public init(item: UInt32, timestampMs: Int64) {
        self.item = item
        self.timestampMs = timestampMs
    }
}

public struct Session: Sendable, Equatable {
    public var user: String
    /// Oldest first (arrival order), at most policy.maxItems.
    public var events: [SessionEvent]
    public var lastSeenMs: Int64
    /// The input partition of the user's events; nil when not known (a format-1 value).
    public var partition: Int32?

    public init(user: String, events: [SessionEvent] = [], lastSeenMs: Int64 = 0, partition: Int32? = nil) {
        self.user = user
        self.events = events
        self.lastSeenMs = lastSeenMs
        self.partition = partition
    }

    public var items: [UInt32] { events.map(\.item) }

    /// Appends in arrival order and keeps only the newest `maxItems` events. lastSeenMs never
    /// moves backwards, so a late (out-of-order) event cannot make a session look idle.
    public mutating func append(item: UInt32, timestampMs: Int64, maxItems: Int) {
        events.append(SessionEvent(item: item, timestampMs: timestampMs))
        let excess = events.count - Swift.max(0, maxItems)
        if excess > 0 { events.removeFirst(excess) }
        lastSeenMs = Swift.max(lastSeenMs, timestampMs)
    }
}

public struct SessionPolicy: Sendable {
    /// Rolling window per user.
    public var maxItems: Int = 200
    /// A session idle longer than this is treated as empty and swept.
    public var idleTTLMs: Int64 = 30 * 24 * 3600 * 1000
    /// Sessions kept decoded in memory (LRU); 0 disables the cache.
    public var cacheCapacity: Int = 100_000

    public init(maxItems: Int = 200, idleTTLMs: Int64 = 30 * 24 * 3600 * 1000, cacheCapacity: Int = 100_000) {
        self.maxItems = maxItems
        self.idleTTLMs = idleTTLMs
        self.cacheCapacity = cacheCapacity
    }
}

/// Used from one thread (the pipeline's); not internally synchronised beyond what KeyValueStore gives.
public final class SessionStore: @unchecked Sendable {
    public let store: KeyValueStore
    public let policy: SessionPolicy

    /// Holds only committed sessions (as read from or written to LevelDB), never staged ones,
    /// so an abandoned batch cannot leak into later reads.
    private var cache: LRUCache<String, Session>
    /// Where the next sweep resumes; nil = the first session key.
    private var sweepCursor: [UInt8]?

    static let sessionPrefix: [UInt8] = Array("s/".utf8)
    static let offsetPrefix: [UInt8] = Array("o/".utf8)
    static let sessionFormat: UInt8 = 2
    static let sessionFormatWithoutPartition: UInt8 = 1
    /// Sessions examined per deleted-session budget in one sweep call; bounds the work even
    /// when almost nothing is expired.
    static let sweepExaminePerLimit = 16

    public init(store: KeyValueStore, policy: SessionPolicy) {
        self.store = store
        self.policy = policy
        self.cache = LRUCache(capacity: policy.cacheCapacity)
    }

    /// The committed session (from LRU cache or LevelDB); empty Session if absent or idle past the TTL at `nowMs`.
    public func session(for user: String, nowMs: Int64) throws -> Session {
        let committed: Session
        if let cached = cache.value(for: user) {
            committed = cached
        } else {
            let key = Self.sessionKey(user)
            guard let value = try store.get(key) else { return Session(user: user) }
            committed = try decode(value, key: key)
            cache.set(committed, for: user)
        }
        return isExpired(committed, nowMs: nowMs) ? Session(user: user) : committed
    }

    /// Puts the encoded session into the batch (does NOT touch the cache: pass the session to
    /// commit(_:sessions:), which updates the cache only after the write succeeds).
    public func stage(_ session: Session, into batch: inout WriteBatch) {
        batch.put(Self.sessionKey(session.user), Self.encode(session))
    }

    /// Kafka partitions are never negative; a negative one would break the key's numeric order.
    public func stageOffset(topic: String, partition: Int32, nextOffset: Int64, into batch: inout WriteBatch) {
        precondition(partition >= 0, "Kafka partition must be >= 0, got \(partition)")
        var value: [UInt8] = []
        value.appendLittleEndian(nextOffset)
        batch.put(Self.offsetKey(topic: topic, partition: partition), value)
    }

    /// Drops a user from the session cache (after a write that bypassed commit).
    public func forget(_ user: String) { cache.remove(user) }

    /// Puts the deletion of a user's session into the batch (pass the user to commit's `removed`).
    public func stageRemoval(_ user: String, into batch: inout WriteBatch) {
        batch.delete(Self.sessionKey(user))
    }

    /// Writes the batch (sync) and only then updates the cache with the staged sessions and removals.
    public func commit(_ batch: WriteBatch, sessions: [Session], removed: [String] = []) throws {
        try store.write(batch, sync: true)
        for session in sessions { cache.set(trimmed(session), for: session.user) }
        for user in removed { cache.remove(user) }
    }

    /// The next offset to consume for a partition, as last committed; nil if never.
    public func nextOffset(topic: String, partition: Int32) throws -> Int64? {
        let key = Self.offsetKey(topic: topic, partition: partition)
        guard let value = try store.get(key) else { return nil }
        return try Self.decodeOffset(value, key: key)
    }

    public func allOffsets() throws -> [(topic: String, partition: Int32, nextOffset: Int64)] {
        var offsets: [(topic: String, partition: Int32, nextOffset: Int64)] = []
        try store.scan(prefix: Self.offsetPrefix) { key, value in
            // Parse from the end: "/" + 10 digits, so the topic part may hold any bytes.
            let suffixStart = key.count - 11
            guard suffixStart >= Self.offsetPrefix.count, key[suffixStart] == UInt8(ascii: "/"),
                  let partition = KeyFormat.parsePadded10(key[(suffixStart + 1)...]),
                  partition <= UInt64(Int32.max),
                  let topic = KeyFormat.utf8String(key[Self.offsetPrefix.count..<suffixStart])
            else {
                throw Self.corrupt(key, "is not a valid offset key (expected o/<topic>/<10-digit partition>)")
            }
            offsets.append((topic, Int32(partition), try Self.decodeOffset(value, key: key)))
            return true
        }
        return offsets
    }

    /// Deletes up to `limit` sessions idle past the TTL; returns how many. Bounded work per call.
    ///
    /// Each call examines at most `limit * 16` sessions, resuming where the previous call
    /// stopped and wrapping around, so repeated calls cover the whole keyspace without any
    /// single call scanning it all. A return value below `limit` does not prove nothing is left.
    public func sweepExpired(nowMs: Int64, limit: Int) throws -> Int {
        let expired = try findExpired(nowMs: nowMs, limit: limit)
        var batch = WriteBatch()
        for session in expired { stageRemoval(session.user, into: &batch) }
        // Not synced: a lost delete is just swept again; the next synced commit flushes it anyway.
        try store.write(batch, sync: false)
        for session in expired { cache.remove(session.user) }
        return expired.count
    }

    /// Up to `limit` sessions idle past the TTL whose partition `owned` accepts, with the same
    /// bounded, resuming walk as sweepExpired; the caller deletes them (stageRemoval + commit).
    public func findExpired(nowMs: Int64, limit: Int, owned: (Int32?) -> Bool = { _ in true }) throws -> [Session] {
        guard limit > 0 else { return [] }
        let (product, overflow) = limit.multipliedReportingOverflow(by: Self.sweepExaminePerLimit)
        let budget = overflow ? Int.max : product
        var expired: [Session] = []
        var examined = 0
        var resumeAt: [UInt8]?
        let start = sweepCursor

        // Returns false once the call's work is used up, remembering where to resume.
        func visit(_ key: [UInt8], _ value: [UInt8]) throws -> Bool {
            if expired.count == limit || examined == budget {
                resumeAt = key
                return false
            }
            examined += 1
            let session = try decode(value, key: key)
            if isExpired(session, nowMs: nowMs), owned(session.partition) { expired.append(session) }
            return true
        }

        try store.scan(prefix: Self.sessionPrefix, from: start, visit)
        var nextCursor = resumeAt
        if resumeAt == nil, let start {
            // Reached the end: wrap around and cover the keys before where this call began.
            try store.scan(prefix: Self.sessionPrefix) { key, value in
                guard key.lexicographicallyPrecedes(start) else { return false }
                return try visit(key, value)
            }
            nextCursor = resumeAt
        }

        sweepCursor = nextCursor
        return expired
    }

    /// Users whose stored session belongs to `partition` (a full scan: for the rare reset of a
    /// partition whose local state cannot be trusted).
    public func users(inPartition partition: Int32) throws -> [String] {
        var users: [String] = []
        try store.scan(prefix: Self.sessionPrefix) { key, value in
            if try Self.decodeSession(value, key: key).partition == partition { users.append(Self.user(fromSessionKey: key)) }
            return true
        }
        return users
    }

    public func sessionCount() throws -> Int {
        var count = 0
        try store.scan(prefix: Self.sessionPrefix) { _, _ in
            count += 1
            return true
        }
        return count
    }

    /// Every stored session in user-key order, including ones idle past the TTL that are not
    /// swept yet (this is the raw view for inspect/dump).
    public func forEachSession(_ body: (Session) throws -> Void) throws {
        try store.scan(prefix: Self.sessionPrefix) { key, value in
            try body(try decode(value, key: key))
            return true
        }
    }

    // MARK: - Encoding

    static func sessionKey(_ user: String) -> [UInt8] {
        sessionPrefix + Array(user.utf8)
    }

    static func user(fromSessionKey key: [UInt8]) -> String {
        String(decoding: key[sessionPrefix.count...], as: UTF8.self)
    }

    /// Negative partitions are never staged (see stageOffset); mapping them through the bit
    /// pattern just yields a key that is never present, so lookups answer nil.
    static func offsetKey(topic: String, partition: Int32) -> [UInt8] {
        offsetPrefix + Array(topic.utf8) + Array("/\(KeyFormat.padded10(UInt64(UInt32(bitPattern: partition))))".utf8)
    }

    static func encode(_ session: Session) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(1 + 4 + 8 + 4 + 12 * session.events.count)
        bytes.append(sessionFormat)
        bytes.appendLittleEndian(UInt32(bitPattern: session.partition ?? -1))
        bytes.appendLittleEndian(session.lastSeenMs)
        bytes.appendLittleEndian(UInt32(session.events.count))
        for event in session.events {
            bytes.appendLittleEndian(event.item)
            bytes.appendLittleEndian(event.timestampMs)
        }
        return bytes
    }

    /// Decodes exactly one session value; trailing or missing bytes mean corruption.
    static func decodeSession(_ value: [UInt8], key: [UInt8]) throws -> Session {
        var reader = ByteReader(value)
        guard let format = reader.readUInt8() else { throw corrupt(key, "has an empty session value") }
        var partition: Int32? = nil
        switch format {
        case sessionFormat:
            guard let raw = reader.readUInt32() else { throw corrupt(key, "has a truncated session header (\(value.count) bytes)") }
            let p = Int32(bitPattern: raw)
            partition = p >= 0 ? p : nil
        case sessionFormatWithoutPartition:
            break
        default:
            throw corrupt(key, "has unknown session format \(format)")
        }
        guard let lastSeenMs = reader.readInt64(), let count = reader.readUInt32() else {
            throw corrupt(key, "has a truncated session header (\(value.count) bytes)")
        }
        guard reader.remaining == Int(count) * 12 else {
            throw corrupt(key, "declares \(count) events but holds \(reader.remaining) event bytes")
        }
        var events: [SessionEvent] = []
        events.reserveCapacity(Int(count))
        for _ in 0..<count {
            // Cannot fail: the length check above guarantees 12 bytes per event.
            guard let item = reader.readUInt32(), let timestamp = reader.readInt64() else {
                throw corrupt(key, "has a truncated event")
            }
            events.append(SessionEvent(item: item, timestampMs: timestamp))
        }
        return Session(user: user(fromSessionKey: key), events: events, lastSeenMs: lastSeenMs, partition: partition)
    }

    static func decodeOffset(_ value: [UInt8], key: [UInt8]) throws -> Int64 {
        var reader = ByteReader(value)
        guard value.count == 8, let offset = reader.readInt64() else {
            throw corrupt(key, "holds \(value.count) bytes, expected an 8-byte offset")
        }
        return offset
    }

    static func corrupt(_ key: [UInt8], _ problem: String) -> StorageError {
        StorageError(
            code: .corrupt,
            message: "key \(KeyFormat.describe(key)) \(problem); the --state directory is damaged: restore it "
                + "from a backup, or move it aside to rebuild state from Kafka")
    }

    // MARK: - Policy

    /// Decoded and trimmed to the current policy, which may be smaller than when it was written.
    private func decode(_ value: [UInt8], key: [UInt8]) throws -> Session {
        trimmed(try Self.decodeSession(value, key: key))
    }

    private func trimmed(_ session: Session) -> Session {
        let excess = session.events.count - Swift.max(0, policy.maxItems)
        guard excess > 0 else { return session }
        var copy = session
        copy.events.removeFirst(excess)
        return copy
    }

    /// Idle strictly longer than the TTL. Overflow-safe for any pair of timestamps.
    private func isExpired(_ session: Session, nowMs: Int64) -> Bool {
        let (idle, overflow) = nowMs.subtractingReportingOverflow(session.lastSeenMs)
        if overflow { return nowMs > session.lastSeenMs }
        return idle > policy.idleTTLMs
    }
}
