// The model registry: a directory of immutable, verified model versions plus a `current` pointer
// and an append-only promotion history. Plain files and renames only, so it works the same on a
// local disk, NFS or an object-store mount (docs/operations.md, "Model registry"):
//
//   <root>/versions/<version>/model.snap      the snapshot, byte for byte as published
//   <root>/versions/<version>/manifest.json   RegistryManifest (kind, data window, metrics, parent, checksum)
//   <root>/current                            one line: the version being served
//   <root>/history                            one line per promote/rollback (RegistryHistoryEntry)
//   <root>/.staging/                          publish writes here, then renames into versions/
//   <root>/.lock                              flock: one writer at a time on one host
//
// A version is the snapshot's own model version (a content hash the writer computes), so the
// version in every output record is the registry version, and publishing the same model twice is
// a no-op. The snapshot checksum is FNV-1a 64 over every byte of model.snap, as "fnv1a64:<16 hex>";
// it catches corruption and mix-ups (not tampering), like the snapshot's own trailer.
import Foundation
import StreamRecModels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct RegistryError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public enum Code: String, Sendable {
        /// No such registry, version or pointer.
        case notFound = "not-found"
        /// A snapshot that fails verification, or registry files that do not agree with each other.
        case corrupt
        /// A request that cannot be done in this state (nothing to roll back to, bad version name, ...).
        case invalid
        /// The filesystem refused a read or write.
        case io
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "registry \(code.rawValue): \(message)" }
    public var errorDescription: String? { description }
}

/// versions/<version>/manifest.json. Written once, with the snapshot, and never changed.
public struct RegistryManifest: Codable, Sendable, Equatable {
    public struct SnapshotFile: Codable, Sendable, Equatable {
        /// File name inside the version directory.
        public var file: String
        public var bytes: Int
        /// "fnv1a64:<16 lowercase hex digits>" over every byte of the file.
        public var checksum: String
    }

    public var version: String
    /// Model kind from the snapshot manifest (transition, sasrec).
    public var kind: String
    /// When the snapshot was written (its own manifest), ISO-8601 UTC.
    public var createdAt: String
    /// When it entered the registry, ISO-8601 UTC; orders `list` and retention.
    public var publishedAt: String
    /// What the model was trained on: the snapshot's training source.
    public var source: String
    /// The data window the caller states (e.g. "2026-11-16..2026-11-22"); nil when not given.
    public var dataWindow: String?
    public var training: SnapshotManifest.TrainingSummary
    /// The snapshot's metrics, plus any the caller adds (e.g. `streamrec evaluate`'s report).
    public var metrics: [String: Double]
    /// The version this one was trained to replace (the current one at publish time by default).
    public var parent: String?
    public var snapshot: SnapshotFile

    enum CodingKeys: String, CodingKey {
        case version, kind, source, training, metrics, parent, snapshot
        case createdAt = "created_at"
        case publishedAt = "published_at"
        case dataWindow = "data_window"
    }
}

/// One line of `history`: `<time>\t<action>\t<version>\t<previous or ->`.
public struct RegistryHistoryEntry: Sendable, Equatable {
    public enum Action: String, Sendable { case promote, rollback }
    public var at: String
    public var action: Action
    public var version: String
    /// The version that was current before; nil for the first promotion.
    public var previous: String?

    var line: String { "\(at)\t\(action.rawValue)\t\(version)\t\(previous ?? "-")\n" }

    init(at: String, action: Action, version: String, previous: String?) {
        self.at = at
        self.action = action
        self.version = version
        self.previous = previous
    }

    init?(line: Substring) {
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count == 4, let action = Action(rawValue: String(fields[1])), !fields[2].isEmpty else { return nil }
        self.init(at: String(fields[0]), action: action, version: String(fields[2]), previous: fields[3] == "-" ? nil : String(fields[3]))
    }
}

/// A registry rooted at a directory. Reads may happen from any number of processes and hosts;
/// mutations (publish, promote, rollback, prune) are serialized per host with a lock file and
/// are each a single rename, so a reader never sees a half-written version or pointer.
public struct ModelRegistry: Sendable {
    public let root: URL
    public static let snapshotFile = "model.snap"
    public static let manifestFile = "manifest.json"

    /// `create`: make the directory layout if missing (publishing); readers pass false so a
    /// mistyped path is reported instead of silently creating an empty registry.
    public init(root: String, create: Bool = false) throws(RegistryError) {
        self.root = URL(fileURLWithPath: root).standardizedFileURL
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: self.root.path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue {
            throw RegistryError(.invalid, "\(root) is a file, not a registry directory; pass the registry directory (model.registry / --registry)")
        }
        if !exists && !create {
            throw RegistryError(.notFound, "no registry at \(root); check model.registry / --registry, or create one with `streamrec models publish --registry \(root) --snapshot PATH`")
        }
        do {
            try FileManager.default.createDirectory(at: versionsDirectory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: stagingDirectory, withIntermediateDirectories: true)
        } catch {
            throw RegistryError(.io, "cannot create the registry layout in \(root): \(error.localizedDescription); check the directory is writable")
        }
    }

    var versionsDirectory: URL { root.appendingPathComponent("versions") }
    var stagingDirectory: URL { root.appendingPathComponent(".staging") }
    var currentFile: URL { root.appendingPathComponent("current") }
    var historyFile: URL { root.appendingPathComponent("history") }

    public func directory(of version: String) -> URL { versionsDirectory.appendingPathComponent(version) }
    /// Absolute path of a version's snapshot (what announcements carry).
    public func snapshotPath(of version: String) -> String { directory(of: version).appendingPathComponent(Self.snapshotFile).path }

    // MARK: publish

    /// Copies a snapshot into the registry as a new immutable version and returns its manifest.
    /// The snapshot must load (`Snapshot.read` verifies it whole); a corrupt file is refused here,
    /// never published. `parent` defaults to the current version. Publishing a model that is
    /// already in the registry returns the existing entry unchanged.
    @discardableResult
    /// `attachments` (file name -> bytes, e.g. the training report) are staged with the snapshot
    /// and land in the version directory with it.
    public func publish(snapshotPath: String, parent: String? = nil, dataWindow: String? = nil,
                        metrics extraMetrics: [String: Double] = [:], attachments: [String: Data] = [:],
                        now: Date = Date()) throws(RegistryError) -> RegistryManifest {
        for name in attachments.keys where name.contains("/") || name.hasPrefix(".") || name == Self.snapshotFile || name == Self.manifestFile {
            throw RegistryError(.invalid, "attachment name '\(name)' is not allowed (a plain file name other than \(Self.snapshotFile) and \(Self.manifestFile)); rename it")
        }
        let snapshot: Snapshot
        do {
            snapshot = try Snapshot.read(path: snapshotPath)
        } catch {
            throw RegistryError(.corrupt, "refusing to publish \(snapshotPath): \(error); publish a snapshot that `streamrec snapshot inspect` accepts")
        }
        let version = snapshot.manifest.modelVersion
        try Self.checkVersionName(version, what: "the snapshot's model version")
        if let bad = extraMetrics.first(where: { !$0.value.isFinite }) {
            throw RegistryError(.invalid, "metric '\(bad.key)' is \(bad.value); pass only finite metrics")
        }
        return try withLock { () throws(RegistryError) -> RegistryManifest in
            // Published already: the same answer again. Only "not found" goes on to publish; a
            // version directory that does not read is reported, never written over.
            do throws(RegistryError) {
                return try manifest(version)
            } catch {
                if error.code != .notFound { throw error }
            }
            var resolvedParent = parent
            if resolvedParent == nil { resolvedParent = try currentVersion() }
            if let resolvedParent, resolvedParent != version { _ = try manifest(resolvedParent) }
            // Stage the copy and its manifest in a temporary directory on the same filesystem, flush
            // both, then rename the directory into versions/: it appears whole or not at all.
            let staging = stagingDirectory.appendingPathComponent("\(version).\(getpid()).\(UUID().uuidString.prefix(8))")
            defer { try? FileManager.default.removeItem(at: staging) }
            let bytes: Data
            do {
                try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
                bytes = try Data(contentsOf: URL(fileURLWithPath: snapshotPath))
            } catch {
                throw RegistryError(.io, "cannot stage \(snapshotPath) in \(staging.path): \(error.localizedDescription); check the registry is writable and has room")
            }
            // The bytes copied are the bytes verified: decode the copy, not the source again.
            do {
                _ = try Snapshot.decode(bytes, path: snapshotPath)
            } catch {
                throw RegistryError(.corrupt, "refusing to publish \(snapshotPath): it changed while being copied (\(error)); publish it again once it is complete")
            }
            let formatter = Self.timeFormatter()
            var metrics = snapshot.manifest.metrics
            metrics.merge(extraMetrics) { _, new in new }
            let entry = RegistryManifest(
                version: version, kind: snapshot.manifest.kind, createdAt: snapshot.manifest.createdAt,
                publishedAt: formatter.string(from: now), source: snapshot.manifest.training.source, dataWindow: dataWindow,
                training: snapshot.manifest.training, metrics: metrics, parent: resolvedParent == version ? nil : resolvedParent,
                snapshot: .init(file: Self.snapshotFile, bytes: bytes.count, checksum: Self.checksum(bytes)))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let manifestBytes: Data
            do { manifestBytes = try encoder.encode(entry) } catch {
                throw RegistryError(.invalid, "cannot encode the manifest of \(version): \(error)")
            }
            try Self.writeDurably(bytes, to: staging.appendingPathComponent(Self.snapshotFile))
            try Self.writeDurably(manifestBytes, to: staging.appendingPathComponent(Self.manifestFile))
            for (name, data) in attachments.sorted(by: { $0.key < $1.key }) {
                try Self.writeDurably(data, to: staging.appendingPathComponent(name))
            }
            try Self.syncDirectory(staging)
            let target = directory(of: version)
            guard rename(staging.path, target.path) == 0 else {
                throw RegistryError(.io, "cannot move \(staging.path) to \(target.path): \(String(cString: strerror(errno))); check the registry is writable")
            }
            try Self.syncDirectory(versionsDirectory)
            return entry
        }
    }

    // MARK: read

    /// Every version, oldest published first.
    public func list() throws(RegistryError) -> [RegistryManifest] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: versionsDirectory.path)
        } catch {
            throw RegistryError(.io, "cannot list \(versionsDirectory.path): \(error.localizedDescription)")
        }
        var entries: [RegistryManifest] = []
        for name in names where !name.hasPrefix(".") {
            entries.append(try manifest(name))
        }
        return entries.sorted { ($0.publishedAt, $0.version) < ($1.publishedAt, $1.version) }
    }

    /// A version's manifest (`streamrec models show`).
    public func show(_ version: String) throws(RegistryError) -> RegistryManifest { try manifest(version) }

    func manifest(_ version: String) throws(RegistryError) -> RegistryManifest {
        try Self.checkVersionName(version, what: "version")
        let path = directory(of: version).appendingPathComponent(Self.manifestFile)
        guard let data = FileManager.default.contents(atPath: path.path) else {
            throw RegistryError(.notFound, "no version \(version) in \(root.path); `streamrec models list --registry \(root.path)` shows what is there")
        }
        let entry: RegistryManifest
        do {
            entry = try JSONDecoder().decode(RegistryManifest.self, from: data)
        } catch {
            throw RegistryError(.corrupt, "\(path.path) is not a valid registry manifest (\(error)); restore the version directory or publish the snapshot again")
        }
        guard entry.version == version else {
            throw RegistryError(.corrupt, "\(path.path) describes version \(entry.version), not \(version); the directory was renamed or copied by hand: restore it")
        }
        return entry
    }

    /// The version being served, or nil before the first promotion.
    public func currentVersion() throws(RegistryError) -> String? {
        guard let data = FileManager.default.contents(atPath: currentFile.path) else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { return nil }
        try Self.checkVersionName(text, what: "\(currentFile.path)")
        return text
    }

    /// The current version's manifest, or nil before the first promotion.
    public func current() throws(RegistryError) -> RegistryManifest? {
        try currentVersion().map { v throws(RegistryError) in try manifest(v) }
    }

    public func history() throws(RegistryError) -> [RegistryHistoryEntry] {
        guard let data = FileManager.default.contents(atPath: historyFile.path) else { return [] }
        // A torn last line (a crash mid-append) is skipped, not fatal.
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { RegistryHistoryEntry(line: $0) }
    }

    /// The version `rollback` would return to: the one that was current when the current version
    /// was last promoted. Nil when there is none.
    public func previousVersion() throws(RegistryError) -> String? {
        guard let current = try currentVersion() else { return nil }
        return try history().last { $0.action == .promote && $0.version == current }?.previous
    }

    /// The snapshot path of a version after checking the file against its manifest (size and
    /// checksum) and decoding it: what a server may load. Throws `.corrupt` naming the problem.
    public func verifiedSnapshotPath(_ version: String) throws(RegistryError) -> String {
        let entry = try manifest(version)
        let path = snapshotPath(of: version)
        try Self.verify(path: path, checksum: entry.snapshot.checksum, version: version)
        do {
            _ = try Snapshot.read(path: path)
        } catch {
            throw RegistryError(.corrupt, "version \(version): \(error); the registry copy is damaged: publish the snapshot again or promote another version")
        }
        return path
    }

    /// Checks a file against a "fnv1a64:..." checksum.
    public static func verify(path: String, checksum: String, version: String) throws(RegistryError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RegistryError(.notFound, "version \(version): \(path) is missing or unreadable; restore it or promote another version")
        }
        let actual = Self.checksum(data)
        guard actual == checksum else {
            throw RegistryError(.corrupt, "version \(version): \(path) has checksum \(actual), its manifest says \(checksum); the file is damaged: publish the snapshot again or promote another version")
        }
    }

    public static func checksum(_ bytes: Data) -> String {
        let value = bytes.withUnsafeBytes { raw in
            var hash = FNV1a64()
            hash.update(raw)
            return hash.value
        }
        let digits = String(value, radix: 16)
        return "fnv1a64:" + String(repeating: "0", count: 16 - digits.count) + digits
    }

    // MARK: promote, rollback, retention

    /// Makes `version` current (after verifying its snapshot) and records it in the history.
    /// Returns the version that was current before.
    @discardableResult
    public func promote(_ version: String, now: Date = Date()) throws(RegistryError) -> String? {
        _ = try verifiedSnapshotPath(version)
        return try withLock { () throws(RegistryError) -> String? in
            let previous = try currentVersion()
            try setCurrent(version)
            try appendHistory(.init(at: Self.timeFormatter().string(from: now), action: .promote, version: version, previous: previous))
            return previous
        }
    }

    /// Makes the previous promoted version current again (see `previousVersion`); repeated
    /// rollbacks walk further back. Returns (from, to).
    @discardableResult
    public func rollback(now: Date = Date()) throws(RegistryError) -> (from: String, to: String) {
        try withLock { () throws(RegistryError) -> (from: String, to: String) in
            guard let current = try currentVersion() else {
                throw RegistryError(.invalid, "nothing to roll back: \(root.path) has no current version; promote one with `streamrec models promote VERSION`")
            }
            guard let target = try previousVersion() else {
                throw RegistryError(.invalid, "nothing to roll back to: \(current) was the first version promoted in \(root.path); promote another version instead")
            }
            _ = try verifiedSnapshotPath(target)
            try setCurrent(target)
            try appendHistory(.init(at: Self.timeFormatter().string(from: now), action: .rollback, version: target, previous: current))
            return (current, target)
        }
    }

    /// Deletes all but the `keep` most recently published versions, never the current one or the
    /// one a rollback would return to. Returns the versions deleted.
    @discardableResult
    public func prune(keep: Int) throws(RegistryError) -> [String] {
        guard keep >= 1 else { throw RegistryError(.invalid, "--keep must be at least 1, got \(keep)") }
        return try withLock { () throws(RegistryError) -> [String] in
            let protected = Set([try currentVersion(), try previousVersion()].compactMap { $0 })
            let all = try list()
            let doomed = all.dropLast(keep).map(\.version).filter { !protected.contains($0) }
            for version in doomed {
                // Rename out of versions/ first: a reader sees the version whole or not at all.
                let trash = stagingDirectory.appendingPathComponent("deleted-\(version).\(UUID().uuidString.prefix(8))")
                guard rename(directory(of: version).path, trash.path) == 0 else {
                    throw RegistryError(.io, "cannot remove version \(version): \(String(cString: strerror(errno))); check the registry is writable")
                }
                try? FileManager.default.removeItem(at: trash)
            }
            return doomed
        }
    }

    private func setCurrent(_ version: String) throws(RegistryError) {
        // Temp file + fsync + rename + directory fsync: readers see the old or the new pointer.
        do {
            try DurableFile.replace(currentFile.path, with: Array((version + "\n").utf8))
        } catch {
            throw RegistryError(.io, "cannot update \(currentFile.path): \(error); check the registry is writable")
        }
    }

    private func appendHistory(_ entry: RegistryHistoryEntry) throws(RegistryError) {
        do {
            try DurableFile.append(historyFile.path, Array(entry.line.utf8))
        } catch {
            throw RegistryError(.io, "cannot append to \(historyFile.path): \(error); the pointer moved but the history missed it, so fix permissions and append the line by hand")
        }
    }

    /// flock on <root>/.lock around a mutation. Advisory, and per host on most network
    /// filesystems: run one retrain job (one writer) per registry.
    private func withLock<T>(_ body: () throws(RegistryError) -> T) throws(RegistryError) -> T {
        let path = root.appendingPathComponent(".lock").path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw RegistryError(.io, "cannot open the lock file \(path): \(String(cString: strerror(errno))); check the registry is writable")
        }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else {
            throw RegistryError(.io, "cannot lock \(path): \(String(cString: strerror(errno)))")
        }
        defer { _ = flock(fd, LOCK_UN) }
        return try body()
    }

    // MARK: helpers

    static func checkVersionName(_ version: String, what: String) throws(RegistryError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !version.isEmpty, version.count <= 128, !version.hasPrefix("."), version.allSatisfy({ allowed.contains($0) }) else {
            throw RegistryError(.invalid, "\(what) '\(version)' is not a valid version name (letters, digits, '.', '_', '-'; not starting with '.'); check the name")
        }
    }

    static func timeFormatter() -> ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        f.timeZone = TimeZone(identifier: "UTC")
        return f
    }

    static func writeDurably(_ data: Data, to url: URL) throws(RegistryError) {
        do {
            try DurableFile.create(url.path, with: data)
        } catch {
            throw RegistryError(.io, "cannot write \(url.path): \(error); check the registry is writable and the disk has room")
        }
    }

    static func syncDirectory(_ url: URL) throws(RegistryError) {
        DurableFile.syncDirectory(url.path)
    }
}
