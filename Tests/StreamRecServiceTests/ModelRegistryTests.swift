import Foundation
import Testing
import StreamRecModels
@testable import StreamRecService

/// The registry on temporary directories: layout, immutability, pointer, history, retention,
/// and refusal of corrupt snapshots at publish and at load.
@Suite struct ModelRegistryTests {
    final class Scratch {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("streamrec-registry-\(UUID().uuidString.prefix(8))")
        init() { try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(at: url) }
        var root: String { url.appendingPathComponent("registry").path }

        /// A small transition snapshot; `seed` changes the data, hence the version.
        func snapshot(_ seed: Int) throws -> String {
            let sequences = (0..<20).map { u in (0..<8).map { "i\((u * (seed + 1) + $0 * (seed + 2)) % 30)" } }
            let path = url.appendingPathComponent("model-\(seed).snap").path
            try TransitionModel.train(sequences: sequences, config: TransitionConfig(), source: "seed \(seed)").save(to: path)
            return path
        }
    }

    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func publishCopiesVerifiesAndRecordsTheManifest() throws {
        let s = Scratch()
        let registry = try ModelRegistry(root: s.root, create: true)
        let path = try s.snapshot(1)
        let entry = try registry.publish(snapshotPath: path, dataWindow: "2026-11-16..2026-11-22", metrics: ["validation_ndcg@10": 0.25], now: Self.t0)
        let snapshot = try Snapshot.read(path: path)
        #expect(entry.version == snapshot.manifest.modelVersion)
        #expect(entry.kind == "transition" && entry.parent == nil && entry.dataWindow == "2026-11-16..2026-11-22")
        #expect(entry.metrics["validation_ndcg@10"] == 0.25)
        let copy = registry.snapshotPath(of: entry.version)
        #expect(copy == s.url.appendingPathComponent("registry/versions/\(entry.version)/model.snap").standardizedFileURL.path)
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(entry.snapshot.checksum == ModelRegistry.checksum(try Data(contentsOf: URL(fileURLWithPath: path))))
        #expect(entry.snapshot.checksum.hasPrefix("fnv1a64:") && entry.snapshot.checksum.count == 24)
        #expect(try registry.show(entry.version) == entry)
        #expect(try registry.list().map(\.version) == [entry.version])
        #expect(try registry.currentVersion() == nil)
        // Nothing left in staging.
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.root + "/.staging").isEmpty)
    }

    @Test func versionsAreImmutable() throws {
        let s = Scratch()
        let registry = try ModelRegistry(root: s.root, create: true)
        let path = try s.snapshot(1)
        let first = try registry.publish(snapshotPath: path, dataWindow: "w1", now: Self.t0)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: registry.snapshotPath(of: first.version)))
        // The same model again (even retrained: new created_at, same content) changes nothing.
        try TransitionModel.load(path: path).save(to: path)
        let again = try registry.publish(snapshotPath: path, dataWindow: "w2", now: Self.t0.addingTimeInterval(60))
        #expect(again == first)
        #expect(try Data(contentsOf: URL(fileURLWithPath: registry.snapshotPath(of: first.version))) == bytes)
        #expect(try registry.list().count == 1)
        // A version whose manifest no longer reads is reported, not published over.
        let manifest = URL(fileURLWithPath: registry.snapshotPath(of: first.version)).deletingLastPathComponent()
            .appendingPathComponent(ModelRegistry.manifestFile)
        try Data("{not json".utf8).write(to: manifest)
        let error = #expect(throws: RegistryError.self) { try registry.publish(snapshotPath: path, now: Self.t0.addingTimeInterval(120)) }
        #expect(error?.code == .corrupt)
        #expect(try Data(contentsOf: manifest) == Data("{not json".utf8))
    }

    @Test func corruptSnapshotIsRefusedAtPublish() throws {
        let s = Scratch()
        let registry = try ModelRegistry(root: s.root, create: true)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try s.snapshot(1))))
        bytes[bytes.count / 2] ^= 0x40
        let corrupt = s.url.appendingPathComponent("corrupt.snap").path
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        do {
            try registry.publish(snapshotPath: corrupt)
            Issue.record("a corrupt snapshot was published")
        } catch {
            #expect(error.code == .corrupt)
            #expect(error.message.contains("checksum"), "\(error)")
        }
        #expect(try registry.list().isEmpty)
        #expect(throws: RegistryError.self) { try registry.publish(snapshotPath: s.url.appendingPathComponent("missing.snap").path) }
    }

    @Test func corruptFileInAVersionDirectoryIsRefusedOnLoadAndPromote() throws {
        let s = Scratch()
        let registry = try ModelRegistry(root: s.root, create: true)
        let v1 = try registry.publish(snapshotPath: try s.snapshot(1), now: Self.t0).version
        try registry.promote(v1)
        let v2 = try registry.publish(snapshotPath: try s.snapshot(2), now: Self.t0.addingTimeInterval(1)).version
        let copy = registry.snapshotPath(of: v2)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: copy)))
        bytes[40] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: copy))
        do {
            _ = try registry.verifiedSnapshotPath(v2)
            Issue.record("a damaged version verified")
        } catch {
            #expect(error.code == .corrupt && error.message.contains(v2), "\(error)")
        }
        #expect(throws: RegistryError.self) { try registry.promote(v2) }
        #expect(try registry.currentVersion() == v1)
        #expect(try registry.verifiedSnapshotPath(v1) == registry.snapshotPath(of: v1))
    }

    @Test func promoteMovesThePointerAtomicallyAndRollbackWalksBack() throws {
        let s = Scratch()
        let registry = try ModelRegistry(root: s.root, create: true)
        let v1 = try registry.publish(snapshotPath: try s.snapshot(1), now: Self.t0).version
        let v2 = try registry.publish(snapshotPath: try s.snapshot(2), now: Self.t0.addingTimeInterval(1)).version
        let v3 = try registry.publish(snapshotPath: try s.snapshot(3), now: Self.t0.addingTimeInterval(2)).version
        #expect(Set([v1, v2, v3]).count == 3)
        #expect(throws: RegistryError.self) { try registry.rollback() }
        #expect(try registry.promote(v1) == nil)
        #expect(throws: RegistryError.self) { try registry.rollback() }   // nothing before v1
        #expect(try registry.promote(v2) == v1)
        #expect(try registry.promote(v3) == v2)
        // The pointer is one line naming the version; no temporary files are left beside it.
        #expect(try String(contentsOfFile: s.root + "/current", encoding: .utf8) == v3 + "\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.root).filter { $0.hasSuffix(".tmp") }.isEmpty)
        #expect(try registry.previousVersion() == v2)
        #expect(try registry.rollback() == (from: v3, to: v2))
        #expect(try registry.currentVersion() == v2)
        #expect(try registry.rollback() == (from: v2, to: v1))
        #expect(try registry.currentVersion() == v1)
        let history = try registry.history()
        #expect(history.map(\.action) == [.promote, .promote, .promote, .rollback, .rollback])
        #expect(history.map(\.version) == [v1, v2, v3, v2, v1])
        #expect(history.map(\.previous) == [nil, v1, v2, v3, v2])
        // Published after v1, so v4's parent defaults to the current version.
        let v4 = try registry.publish(snapshotPath: try s.snapshot(4), now: Self.t0.addingTimeInterval(3))
        #expect(v4.parent == v1)
        // A torn last history line (crash mid-append) is ignored.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: s.root + "/history"))
        handle.seekToEndOfFile(); handle.write(Data("2026-11-23T00:00:00Z\tpro".utf8)); handle.closeFile()
        #expect(try registry.history().count == 5)
        #expect(throws: RegistryError.self) { try registry.promote("no-such-version") }
        #expect(throws: RegistryError.self) { try registry.promote("../escape") }
    }

    @Test func pruneKeepsTheNewestAndNeverCurrentOrPredecessor() throws {
        let s = Scratch()
        let registry = try ModelRegistry(root: s.root, create: true)
        var versions: [String] = []
        for i in 0..<6 {
            versions.append(try registry.publish(snapshotPath: try s.snapshot(i), now: Self.t0.addingTimeInterval(Double(i))).version)
        }
        try registry.promote(versions[0])
        try registry.promote(versions[1])   // current v1, predecessor v0: both oldest
        let deleted = try registry.prune(keep: 2)
        #expect(Set(deleted) == Set([versions[2], versions[3]]))
        #expect(try registry.list().map(\.version) == [versions[0], versions[1], versions[4], versions[5]])
        #expect(try registry.rollback().to == versions[0])
        #expect(throws: RegistryError.self) { try registry.prune(keep: 0) }
    }

    @Test func missingRegistryIsReportedNotCreated() throws {
        let s = Scratch()
        do {
            _ = try ModelRegistry(root: s.root)
            Issue.record("a missing registry was opened")
        } catch {
            #expect(error.code == .notFound && error.message.contains("--registry"))
        }
        #expect(!FileManager.default.fileExists(atPath: s.root))
    }

    @Test func announcementRoundTripsAsDocumented() throws {
        let a = ModelAnnouncement(version: "abc123", path: "/r/versions/abc123/model.snap", kind: "transition",
                                  checksum: "fnv1a64:0123456789abcdef", announcedAt: 1_700_000_000_000, action: "promote")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(a.encoded())) as? [String: Any])
        #expect(Set(object.keys) == ["version", "path", "kind", "checksum", "announced_at", "action"])
        #expect(object["path"] as? String == "/r/versions/abc123/model.snap")
        #expect(ModelAnnouncement.decode(a.encoded()) == a)
        #expect(ModelAnnouncement.decode(Array("{}".utf8)) == nil)
    }
}
