// The persisted item vocabulary: external string id <-> dense UInt32 id, append-only.
// Ids start at 1; 0 is reserved for padding in model inputs and is never assigned.
//
// Keys (see SessionStore.swift for the whole layout):
//   v/e/<external>            -> id, UInt32 little endian
//   v/i/<id, 10 digits>       -> external, UTF-8
// Both directions are written in the same batch, so on load they must agree exactly.

/// Used from one thread; reads are safe from other threads only while nothing is being assigned.
public final class Vocabulary: @unchecked Sendable {
    private let store: KeyValueStore
    private var ids: [String: UInt32] = [:]
    /// externals[id - 1]: dense ids make the reverse map a plain array.
    private var externals: [String] = []
    /// Ids 1...persistedCount are known to be in LevelDB; later ones are pending.
    private var persistedCount = 0
    /// How far the most recent stagePending reached; what didCommitPending may mark persisted.
    private var stagedCount: Int?

    static let externalPrefix: [UInt8] = Array("v/e/".utf8)
    static let idPrefix: [UInt8] = Array("v/i/".utf8)

    /// Loads every entry and checks both directions agree and ids are dense from 1.
    public init(store: KeyValueStore) throws {
        self.store = store
        var externals: [String] = []
        try store.scan(prefix: Self.idPrefix) { key, value in
            // 10-digit ids sort numerically, so a dense vocabulary reads back as 1, 2, 3, ...
            guard let id = KeyFormat.parsePadded10(key[Self.idPrefix.count...]) else {
                throw Self.corrupt(key, "is not a valid id key (expected v/i/<10-digit id>)")
            }
            guard id == UInt64(externals.count + 1) else {
                throw Self.corrupt(key, "breaks the dense id sequence: expected id \(externals.count + 1)")
            }
            guard let external = KeyFormat.utf8String(value) else {
                throw Self.corrupt(key, "holds an external id that is not valid UTF-8")
            }
            externals.append(external)
            return true
        }
        var ids: [String: UInt32] = [:]
        try store.scan(prefix: Self.externalPrefix) { key, value in
            guard let external = KeyFormat.utf8String(key[Self.externalPrefix.count...]) else {
                throw Self.corrupt(key, "has an external id that is not valid UTF-8")
            }
            var reader = ByteReader(value)
            guard value.count == 4, let id = reader.readUInt32() else {
                throw Self.corrupt(key, "holds \(value.count) bytes, expected a 4-byte id")
            }
            guard id >= 1, Int(id) <= externals.count else {
                throw Self.corrupt(key, "maps to id \(id), which has no v/i entry (\(externals.count) ids stored)")
            }
            guard externals[Int(id) - 1] == external else {
                throw Self.corrupt(key, "maps to id \(id), but v/i says id \(id) is \"\(externals[Int(id) - 1])\"")
            }
            ids[external] = id
            return true
        }
        // Every v/e entry pointed at a matching v/i entry; equal counts make the maps a bijection.
        guard ids.count == externals.count else {
            throw StorageError(
                code: .corrupt,
                message: "vocabulary has \(externals.count) v/i entries but \(ids.count) v/e entries; the --state "
                    + "directory is damaged: restore it from a backup, or move it aside to rebuild state from Kafka")
        }
        self.ids = ids
        self.externals = externals
        self.persistedCount = externals.count
    }

    /// Number of assigned ids, pending ones included.
    public var count: Int { externals.count }

    public func id(for external: String) -> UInt32? { ids[external] }

    public func external(for id: UInt32) -> String? {
        guard id >= 1, Int(id) <= externals.count else { return nil }
        return externals[Int(id) - 1]
    }

    /// Returns the id, assigning the next one in memory if new. New ids stay "pending" until stagePending+didCommit.
    public func idOrAssign(_ external: String) -> UInt32 {
        if let id = ids[external] { return id }
        precondition(externals.count < Int(UInt32.max), "item vocabulary is full (\(UInt32.max) ids)")
        externals.append(external)
        let id = UInt32(externals.count)
        ids[external] = id
        return id
    }

    public var hasPending: Bool { externals.count > persistedCount }

    /// Stages every pending id (both directions). Safe to repeat: if a batch was abandoned,
    /// the same ids are staged again with the next one.
    public func stagePending(into batch: inout WriteBatch) {
        for index in persistedCount..<externals.count {
            let id = UInt32(index + 1)
            var idBytes: [UInt8] = []
            idBytes.appendLittleEndian(id)
            batch.put(Self.externalKey(externals[index]), idBytes)
            batch.put(Self.idKey(id), Array(externals[index].utf8))
        }
        stagedCount = externals.count
    }

    /// Call after the batch holding the latest stagePending was written. Ids assigned after
    /// that stagePending stay pending.
    public func didCommitPending() {
        guard let stagedCount else { return }
        persistedCount = Swift.max(persistedCount, stagedCount)
        self.stagedCount = nil
    }

    /// Convenience: assign many (e.g. a model's item list) and write them at once.
    /// Also persists any ids that were already pending, which is harmless: they are valid.
    public func assignAndPersist(_ externals: [String]) throws -> [UInt32] {
        let assigned = externals.map(idOrAssign)
        if hasPending {
            var batch = WriteBatch()
            stagePending(into: &batch)
            try store.write(batch, sync: true)
            didCommitPending()
        }
        return assigned
    }

    static func externalKey(_ external: String) -> [UInt8] {
        externalPrefix + Array(external.utf8)
    }

    static func idKey(_ id: UInt32) -> [UInt8] {
        idPrefix + Array(KeyFormat.padded10(UInt64(id)).utf8)
    }

    static func corrupt(_ key: [UInt8], _ problem: String) -> StorageError {
        StorageError(
            code: .corrupt,
            message: "vocabulary key \(KeyFormat.describe(key)) \(problem); the --state directory is damaged: "
                + "restore it from a backup, or move it aside to rebuild state from Kafka")
    }
}
