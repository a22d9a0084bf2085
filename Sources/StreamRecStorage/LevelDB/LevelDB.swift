// The only file in StreamRec that touches CLevelDB pointers. Everything above this layer
// sees byte arrays, a pure-Swift WriteBatch and StorageError.

import CLevelDB
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public struct StorageError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable { case openFailed, readFailed, writeFailed, corrupt, locked }

    public let code: Code
    /// Says what went wrong and what the operator should do about it.
    public let message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// Turns a LevelDB status string into a StorageError. Lock and corruption problems get their
    /// own codes because the operator's fix differs (stop the other process / restore the state).
    static func fromLevelDB(_ raw: String, fallback: Code, path: String, action: String) -> StorageError {
        // LevelDB's POSIX env reports both "held by another process" (fcntl EAGAIN) and
        // "already held by process" (same process) as "IO error: lock <dir>/LOCK: ...".
        if raw.contains("IO error: lock ") {
            return StorageError(
                code: .locked,
                message: "another streamrec process (or another open store in this process) holds the lock on "
                    + "\(path)/LOCK; stop it or use another --state directory (leveldb: \(raw))")
        }
        if raw.hasPrefix("Corruption") {
            return StorageError(
                code: .corrupt,
                message: "LevelDB found corruption in \(path) while \(action): \(raw); restore the --state "
                    + "directory from a backup, or move it aside to rebuild state from Kafka")
        }
        return StorageError(
            code: fallback,
            message: "\(action) \(path) failed: \(raw); check permissions and free disk space of the "
                + "--state directory")
    }
}

/// Pure-Swift list of puts and deletes, so callers can build batches anywhere (and send them
/// across threads) without owning C memory. Converted to a leveldb_writebatch inside write().
public struct WriteBatch: Sendable {
    enum Operation: Sendable, Equatable {
        case put([UInt8], [UInt8])
        case delete([UInt8])
    }

    private(set) var operations: [Operation] = []

    public init() {}

    public mutating func put(_ key: [UInt8], _ value: [UInt8]) {
        operations.append(.put(key, value))
    }

    public mutating func delete(_ key: [UInt8]) {
        operations.append(.delete(key))
    }

    public var count: Int { operations.count }
    public var isEmpty: Bool { operations.isEmpty }
}

/// One LevelDB database. Thread-safe as LevelDB is: concurrent get/write/scan are fine.
/// A reader-writer lock only guards the handle against close(), so a close racing other
/// calls cannot free the database under them. Do not call close() from inside a scan body.
public final class KeyValueStore: @unchecked Sendable {
    /// Directory holding the database; used in error messages.
    public let path: String

    // All C objects are released in close(); nil means closed.
    private var db: OpaquePointer?
    private var options: OpaquePointer?
    private var blockCache: OpaquePointer?
    private var filterPolicy: OpaquePointer?
    private var pointReadOptions: OpaquePointer?
    private var scanReadOptions: OpaquePointer?
    private var syncWriteOptions: OpaquePointer?
    private var asyncWriteOptions: OpaquePointer?
    private let handleLock: UnsafeMutablePointer<pthread_rwlock_t>

    /// Opens (creating the directories and the database if missing) the database at `path`.
    /// `cacheBytes` sizes LevelDB's block cache; 0 or less keeps LevelDB's default.
    public init(path: String, cacheBytes: Int = 32 << 20) throws {
        self.path = path
        do {
            // LevelDB creates only the last path component, so make the parents ourselves.
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw StorageError(
                code: .openFailed,
                message: "cannot create the state directory \(path): \(error); check permissions or use "
                    + "another --state directory")
        }

        let options = leveldb_options_create()
        leveldb_options_set_create_if_missing(options, 1)
        let cache: OpaquePointer? = cacheBytes > 0 ? leveldb_cache_create_lru(cacheBytes) : nil
        if let cache { leveldb_options_set_cache(options, cache) }
        // A bloom filter lets lookups of unknown users skip disk reads entirely.
        let filter = leveldb_filterpolicy_create_bloom(10)
        leveldb_options_set_filter_policy(options, filter)

        var err: UnsafeMutablePointer<CChar>?
        let handle = leveldb_open(options, path, &err)
        if let err {
            let raw = String(cString: err)
            leveldb_free(err)
            if let handle { leveldb_close(handle) }
            leveldb_options_destroy(options)
            if let cache { leveldb_cache_destroy(cache) }
            leveldb_filterpolicy_destroy(filter)
            throw StorageError.fromLevelDB(raw, fallback: .openFailed, path: path, action: "opening")
        }

        self.db = handle
        self.options = options
        self.blockCache = cache
        self.filterPolicy = filter
        self.pointReadOptions = leveldb_readoptions_create()
        // Scans are bulk work (load, sweep, dump); keep them from evicting hot blocks.
        let scanOptions = leveldb_readoptions_create()
        leveldb_readoptions_set_fill_cache(scanOptions, 0)
        self.scanReadOptions = scanOptions
        let syncOptions = leveldb_writeoptions_create()
        leveldb_writeoptions_set_sync(syncOptions, 1)
        self.syncWriteOptions = syncOptions
        self.asyncWriteOptions = leveldb_writeoptions_create()

        handleLock = .allocate(capacity: 1)
        handleLock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(handleLock, nil)
    }

    deinit {
        close()
        pthread_rwlock_destroy(handleLock)
        handleLock.deinitialize(count: 1)
        handleLock.deallocate()
    }

    public func get(_ key: [UInt8]) throws -> [UInt8]? {
        try withOpenDB(.readFailed) { db in
            var length = 0
            var err: UnsafeMutablePointer<CChar>?
            let value = key.withUnsafeBytes { k in
                leveldb_get(db, pointReadOptions, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count,
                            &length, &err)
            }
            defer { if let value { leveldb_free(value) } }
            if let err { throw takeError(err, .readFailed, "reading from") }
            guard let value else { return nil }
            return Array(UnsafeRawBufferPointer(start: value, count: length))
        }
    }

    /// Applies the whole batch atomically. `sync` waits for the log to reach the disk, which is
    /// what makes "offset committed together with sessions" survive a machine crash.
    public func write(_ batch: WriteBatch, sync: Bool = true) throws {
        try withOpenDB(.writeFailed) { db in
            // An empty batch would still cost an fsync for nothing.
            if batch.isEmpty { return }
            let cBatch = leveldb_writebatch_create()
            defer { leveldb_writebatch_destroy(cBatch) }
            for operation in batch.operations {
                switch operation {
                case let .put(key, value):
                    key.withUnsafeBytes { k in
                        value.withUnsafeBytes { v in
                            leveldb_writebatch_put(cBatch, k.baseAddress?.assumingMemoryBound(to: CChar.self),
                                                   k.count, v.baseAddress?.assumingMemoryBound(to: CChar.self),
                                                   v.count)
                        }
                    }
                case let .delete(key):
                    key.withUnsafeBytes { k in
                        leveldb_writebatch_delete(cBatch, k.baseAddress?.assumingMemoryBound(to: CChar.self),
                                                  k.count)
                    }
                }
            }
            var err: UnsafeMutablePointer<CChar>?
            leveldb_write(db, sync ? syncWriteOptions : asyncWriteOptions, cBatch, &err)
            if let err { throw takeError(err, .writeFailed, "writing to") }
        }
    }

    /// Visits keys with the prefix in order; return false from body to stop.
    public func scan(prefix: [UInt8], _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool) throws {
        try scan(prefix: prefix, from: nil, body)
    }

    /// Like scan(prefix:_:) but starts at `start` (inclusive) when it sorts after the prefix;
    /// lets incremental sweeps resume where they stopped.
    func scan(prefix: [UInt8], from start: [UInt8]?,
              _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool) throws {
        try withOpenDB(.readFailed) { db in
            let iterator = leveldb_create_iterator(db, scanReadOptions)
            defer { leveldb_iter_destroy(iterator) }
            var seekKey = prefix
            if let start, prefix.lexicographicallyPrecedes(start) { seekKey = start }
            seekKey.withUnsafeBytes { k in
                leveldb_iter_seek(iterator, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count)
            }
            while leveldb_iter_valid(iterator) != 0 {
                var keyLength = 0
                let keyBytes = UnsafeRawBufferPointer(start: leveldb_iter_key(iterator, &keyLength), count: keyLength)
                // Keys are sorted bytewise, so the first key without the prefix ends the range.
                guard keyBytes.starts(with: prefix) else { break }
                var valueLength = 0
                let valueBytes = UnsafeRawBufferPointer(start: leveldb_iter_value(iterator, &valueLength),
                                                        count: valueLength)
                // Copy out: the iterator's buffers are only valid until the next move.
                guard try body(Array(keyBytes), Array(valueBytes)) else { break }
                leveldb_iter_next(iterator)
            }
            var err: UnsafeMutablePointer<CChar>?
            leveldb_iter_get_error(iterator, &err)
            if let err { throw takeError(err, .readFailed, "scanning") }
        }
    }

    /// Idempotent; also run by deinit. Releases the LOCK so another process can open the path.
    public func close() {
        pthread_rwlock_wrlock(handleLock)
        defer { pthread_rwlock_unlock(handleLock) }
        guard let db else { return }
        leveldb_close(db)
        self.db = nil
        // The cache and filter policy must outlive the database, so they go after it.
        if let options { leveldb_options_destroy(options) }
        if let blockCache { leveldb_cache_destroy(blockCache) }
        if let filterPolicy { leveldb_filterpolicy_destroy(filterPolicy) }
        if let pointReadOptions { leveldb_readoptions_destroy(pointReadOptions) }
        if let scanReadOptions { leveldb_readoptions_destroy(scanReadOptions) }
        if let syncWriteOptions { leveldb_writeoptions_destroy(syncWriteOptions) }
        if let asyncWriteOptions { leveldb_writeoptions_destroy(asyncWriteOptions) }
        options = nil
        blockCache = nil
        filterPolicy = nil
        pointReadOptions = nil
        scanReadOptions = nil
        syncWriteOptions = nil
        asyncWriteOptions = nil
    }

    /// Runs body with the handle held open (read side of the lock), or throws if closed.
    private func withOpenDB<R>(_ code: StorageError.Code, _ body: (OpaquePointer) throws -> R) throws -> R {
        pthread_rwlock_rdlock(handleLock)
        defer { pthread_rwlock_unlock(handleLock) }
        guard let db else {
            throw StorageError(
                code: code,
                message: "the store at \(path) is closed; open a new KeyValueStore on it before using it")
        }
        return try body(db)
    }

    /// Copies and frees a LevelDB error string.
    private func takeError(_ err: UnsafeMutablePointer<CChar>, _ code: StorageError.Code,
                           _ action: String) -> StorageError {
        let raw = String(cString: err)
        leveldb_free(err)
        return StorageError.fromLevelDB(raw, fallback: code, path: path, action: action)
    }
}

/// The LevelDB this process loaded.
public enum LevelDBLibrary {
    public static var version: String { "\(leveldb_major_version()).\(leveldb_minor_version())" }
}
