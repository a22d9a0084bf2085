// The records of the sessions changelog: a compacted Kafka topic, co-partitioned with the input,
// that holds every session as of the last micro-batch that changed it (docs/architecture.md,
// "Sessions changelog"). Any instance restores a partition from it; LevelDB is a local copy.
//
// Records of changelog partition p (p = the input partition of the users' events), in order:
//   key = user (UTF-8)        value = session record (below)      a session after a micro-batch
//   key = user (UTF-8)        value = null (tombstone)            a session swept after its TTL
//   key = markerKey           value = marker record (below)       "the batch ending here is whole"
// A micro-batch writes its session records first and its marker last. Restore applies the
// session records that precede a marker and ignores a tail without one (a batch cut short by a
// crash is replayed from the input, so its partial records must not count).
//
// Item ids are external strings, not this instance's dense ids: dense ids are assigned locally in
// arrival order and differ between instances, so the changelog is the one place both agree on.
//
// Session record, little endian:
//   UInt8 kind (= 1) | Int64 inputOffset | Int64 lastSeenMs | UInt32 count |
//   count x (UInt32 byteLength | UTF-8 item id | Int64 timestampMs)
//   inputOffset: offset of the newest input record applied to this session.
// Marker record:
//   UInt8 kind (= 2) | Int64 nextInputOffset
// Any value that does not decode exactly throws .corrupt.

public enum ChangelogRecord: Sendable, Equatable {
    /// A session, its items spelled as external ids, oldest first.
    case session(user: String, inputOffset: Int64, lastSeenMs: Int64, events: [ExternalEvent])
    /// The session was swept; compaction drops the key.
    case tombstone(user: String)
    /// Every record of the partition before this one belongs to micro-batches that completed; the
    /// partition's next input offset is `nextInputOffset`.
    case marker(nextInputOffset: Int64)

    public struct ExternalEvent: Sendable, Equatable {
        public var item: String
        public var timestampMs: Int64
        public init(item: String, timestampMs: Int64) {
            self.item = item
            self.timestampMs = timestampMs
        }
    }

    /// A key no user can have: 0xFF never occurs in UTF-8, and user ids are valid UTF-8.
    public static let markerKey: [UInt8] = [0xFF] + Array("marker".utf8)
    static let sessionKind: UInt8 = 1
    static let markerKind: UInt8 = 2

    public var key: [UInt8] {
        switch self {
        case .session(let user, _, _, _), .tombstone(let user): return Array(user.utf8)
        case .marker: return Self.markerKey
        }
    }

    /// nil for a tombstone.
    public var value: [UInt8]? {
        switch self {
        case .tombstone:
            return nil
        case .marker(let next):
            var bytes: [UInt8] = [Self.markerKind]
            bytes.appendLittleEndian(next)
            return bytes
        case .session(_, let inputOffset, let lastSeenMs, let events):
            var bytes: [UInt8] = []
            bytes.reserveCapacity(21 + events.count * 24)
            bytes.append(Self.sessionKind)
            bytes.appendLittleEndian(inputOffset)
            bytes.appendLittleEndian(lastSeenMs)
            bytes.appendLittleEndian(UInt32(events.count))
            for event in events {
                let utf8 = Array(event.item.utf8)
                bytes.appendLittleEndian(UInt32(utf8.count))
                bytes.append(contentsOf: utf8)
                bytes.appendLittleEndian(event.timestampMs)
            }
            return bytes
        }
    }

    /// Decodes one record as consumed; `where` names it in errors (topic, partition, offset).
    public static func decode(key: [UInt8]?, value: [UInt8]?, where place: @autoclosure () -> String) throws -> ChangelogRecord {
        guard let key, !key.isEmpty else { throw corrupt(place(), "has no key") }
        if key == markerKey {
            guard let value else { throw corrupt(place(), "is a marker without a value") }
            var reader = ByteReader(value)
            guard reader.readUInt8() == markerKind, let next = reader.readInt64(), reader.remaining == 0 else {
                throw corrupt(place(), "is a marker of \(value.count) bytes, expected kind 2 and an 8-byte offset")
            }
            return .marker(nextInputOffset: next)
        }
        guard let user = KeyFormat.utf8String(key) else { throw corrupt(place(), "has a key that is not UTF-8") }
        guard let value else { return .tombstone(user: user) }
        var reader = ByteReader(value)
        guard let kind = reader.readUInt8() else { throw corrupt(place(), "has an empty value") }
        guard kind == sessionKind else { throw corrupt(place(), "has unknown record kind \(kind) (this build reads kind 1 and 2; a newer StreamRec wrote it?)") }
        guard let inputOffset = reader.readInt64(), let lastSeenMs = reader.readInt64(), let count = reader.readUInt32() else {
            throw corrupt(place(), "has a truncated session header")
        }
        // Each event takes at least 12 bytes: a count beyond that is corruption, not an allocation.
        guard Int(count) * 12 <= reader.remaining else { throw corrupt(place(), "declares \(count) events in \(reader.remaining) bytes") }
        var events: [ExternalEvent] = []
        events.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let length = reader.readUInt32(), let bytes = reader.readBytes(Int(length)),
                  let item = KeyFormat.utf8String(bytes), let ts = reader.readInt64() else {
                throw corrupt(place(), "has a truncated or non-UTF-8 event")
            }
            events.append(ExternalEvent(item: item, timestampMs: ts))
        }
        guard reader.remaining == 0 else { throw corrupt(place(), "has \(reader.remaining) trailing bytes") }
        return .session(user: user, inputOffset: inputOffset, lastSeenMs: lastSeenMs, events: events)
    }

    static func corrupt(_ place: String, _ problem: String) -> StorageError {
        StorageError(code: .corrupt, message: "changelog record \(place) \(problem); the changelog topic was written by something other than StreamRec, or is damaged")
    }
}

/// Applies a changelog partition's records in order, batch by batch: session records are held
/// until the marker that closes their micro-batch, and those written past the marker's offset
/// (left by a batch that crashed and was answered again differently) are dropped.
public struct ChangelogReplayer: Sendable {
    public private(set) var pending: [(offset: Int64, record: ChangelogRecord)] = []

    public init() {}

    /// Feeds one record; returns the whole batch to apply when `record` is a marker.
    public mutating func feed(_ record: ChangelogRecord, offset: Int64) -> (records: [ChangelogRecord], nextInputOffset: Int64)? {
        guard case .marker(let next) = record else {
            pending.append((offset, record))
            return nil
        }
        let batch = pending.compactMap { entry -> ChangelogRecord? in
            if case .session(_, let inputOffset, _, _) = entry.record, inputOffset >= next { return nil }
            return entry.record
        }
        pending.removeAll(keepingCapacity: true)
        return (batch, next)
    }

    /// Changelog offset of the first record not yet closed by a marker (where a later restore
    /// must start again), or nil when nothing is pending.
    public var firstPendingOffset: Int64? { pending.first?.offset }
}
