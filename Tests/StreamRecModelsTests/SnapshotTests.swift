import Foundation
import Testing
@testable import StreamRecModels

@Suite struct SnapshotTests {
    static func writer() throws -> SnapshotWriter {
        var writer = SnapshotWriter(kind: "test", items: ["a", "b", "c"], hyperParameters: ["depth": "4"],
                                    training: .init(users: 2, items: 3, interactions: 5, source: "unit"),
                                    metrics: ["hr@10": 0.25])
        try writer.add("weights", floats: [1, -2.5, 3, 4, 5, .pi], shape: [2, 3])
        try writer.add("index", ints: [7, -8, Int32.max], shape: [3])
        return writer
    }

    /// A file's sections, to rebuild it with one part changed and a valid checksum, so a test
    /// reaches the check after the checksum.
    struct Sections {
        var header: [UInt8]
        var manifest: [String: Any]
        var blob: [UInt8]

        init(_ bytes: [UInt8]) throws {
            header = Array(bytes[0..<16])
            let manifestLength = Int(bytes[16..<24].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            manifest = try JSONSerialization.jsonObject(with: Data(bytes[24..<(24 + manifestLength)])) as! [String: Any]
            blob = Array(bytes[(24 + manifestLength + 8)..<(bytes.count - 8)])
        }

        func assembled() throws -> [UInt8] {
            let json = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])
            var out = header
            withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
            out += json
            withUnsafeBytes(of: UInt64(blob.count).littleEndian) { out += $0 }
            out += blob
            withUnsafeBytes(of: FNV1a64.hash(out).littleEndian) { out += $0 }
            return out
        }
    }

    static let path = "/models/unit.snap"

    /// The message of the refusal of `bytes`, which must be a badSnapshot naming the file.
    func refusal(_ bytes: [UInt8]) -> String {
        guard let error = modelError({ _ = try Snapshot.decode(Data(bytes), path: Self.path) }) else {
            Issue.record("a damaged snapshot was accepted")
            return ""
        }
        #expect(error.code == .badSnapshot)
        #expect(error.message.contains(Self.path), "\(error)")
        return error.message
    }

    @Test func roundTripKeepsTensorsAndManifest() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path("nested/dir/model.snap")
        let created = Date(timeIntervalSince1970: 1_700_000_000)
        let writer = try Self.writer()
        try writer.write(to: path, createdAt: created)
        let snapshot = try Snapshot.read(path: path)
        let manifest = snapshot.manifest
        #expect(snapshot.formatVersion == 1)
        #expect(manifest.kind == "test")
        #expect(manifest.modelVersion == writer.contentVersion)
        #expect(manifest.items == ["a", "b", "c"])
        #expect(manifest.itemsHash == SnapshotFormat.vocabularyHash(["a", "b", "c"]))
        #expect(manifest.hyperParameters == ["depth": "4"])
        #expect(manifest.training == .init(users: 2, items: 3, interactions: 5, source: "unit"))
        #expect(manifest.metrics == ["hr@10": 0.25])
        #expect(manifest.createdAt == "2023-11-14T22:13:20Z")
        #expect(manifest.codeVersion == SnapshotFormat.codeVersion)
        #expect(try snapshot.floats("weights", shape: [2, 3]) == [1, -2.5, 3, 4, 5, .pi])
        #expect(try snapshot.ints("index") == [7, -8, Int32.max])
        #expect(manifest.tensors.allSatisfy { $0.offset % 64 == 0 })
        #expect(manifest.tensors.map(\.offset) == [0, 64])
        // Nothing but the snapshot is left behind by the atomic write.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path("nested/dir")) == ["model.snap"])
    }

    @Test func headerIsLittleEndianAndTheChecksumCoversTheFile() throws {
        let bytes = try Self.writer().encode()
        #expect(Array(bytes[0..<8]) == Array("STRECSNP".utf8))
        #expect(Array(bytes[8..<16]) == [1, 0, 0, 0, 0, 0, 0, 0])
        let checksum = bytes.suffix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        #expect(checksum == FNV1a64.hash(bytes.dropLast(8)))
    }

    @Test func vocabularyHashIsFNV1aOfTheJoinedIds() {
        // FNV-1a 64 reference values: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
        #expect(SnapshotFormat.vocabularyHash([]) == "cbf29ce484222325")
        #expect(SnapshotFormat.vocabularyHash(["a"]) == "af63dc4c8601ec8c")
        #expect(SnapshotFormat.vocabularyHash(["a", "b"]) == SnapshotFormat.hexDigits(FNV1a64.hash(Array("a\nb".utf8)), width: 16))
        #expect(SnapshotFormat.vocabularyHash(["a", "b"]) != SnapshotFormat.vocabularyHash(["ab"]))
    }

    @Test func rewritingReplacesTheFile() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path("model.snap")
        try Self.writer().write(to: path)
        var second = SnapshotWriter(kind: "second", items: ["z"], hyperParameters: [:],
                                    training: .init(users: 1, items: 1, interactions: 1, source: "unit"))
        try second.add("x", floats: [1], shape: [1])
        try second.write(to: path)
        #expect(try Snapshot.read(path: path).manifest.kind == "second")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path) == ["model.snap"])
    }

    @Test func accessorsCheckNameTypeAndShape() throws {
        let snapshot = try Snapshot.decode(Data(try Self.writer().encode()), path: Self.path)
        #expect(modelError { _ = try snapshot.floats("weights", shape: [3, 2]) }?.message.contains("shape [2, 3], expected [3, 2]") == true)
        #expect(modelError { _ = try snapshot.floats("missing") }?.message.contains("'missing' is missing") == true)
        #expect(modelError { _ = try snapshot.ints("weights") }?.message.contains("is f32, expected i32") == true)
    }

    @Test func writerRefusesMismatchedShapesDuplicatesAndNonFiniteMetrics() throws {
        var writer = try Self.writer()
        #expect(modelError { try writer.add("bad", floats: [1, 2, 3], shape: [2, 2]) }?.code == .badSnapshot)
        #expect(modelError { try writer.add("weights", floats: [1], shape: [1]) }?.message.contains("added twice") == true)
        writer.metrics["loss"] = .nan
        #expect(modelError { _ = try writer.encode() }?.message.contains("loss") == true)
    }

    @Test func corruptedBlobByteIsRefusedByTheChecksum() throws {
        var bytes = try Self.writer().encode()
        bytes[bytes.count - 20] ^= 0x01
        #expect(refusal(bytes).contains("checksum mismatch"))
    }

    @Test func corruptedManifestByteIsRefusedByTheChecksum() throws {
        var bytes = try Self.writer().encode()
        bytes[40] ^= 0x20
        #expect(refusal(bytes).contains("checksum mismatch"))
    }

    @Test func truncatedFilesAreRefusedAsTruncated() throws {
        let bytes = try Self.writer().encode()
        #expect(refusal(Array(bytes.dropLast(100))).contains("truncated"))
        #expect(refusal(Array(bytes.prefix(60))).contains("truncated"))
        #expect(refusal(Array(bytes.prefix(12))).contains("truncated"))
        #expect(refusal(Array(bytes.prefix(3))).contains("too short"))
        #expect(refusal(bytes + [0, 0, 0]).contains("unexpected bytes"))
    }

    @Test func wrongMagicIsRefused() throws {
        var bytes = try Self.writer().encode()
        bytes[0] = UInt8(ascii: "X")
        #expect(refusal(bytes).contains("wrong magic \"XTRECSNP\""))
        #expect(refusal(Array("{\"not\": \"a snapshot at all, but long enough to have a header\"}".utf8)).contains("wrong magic"))
    }

    @Test func newerFormatVersionAndUnknownFlagsAskForANewerStreamrec() throws {
        var sections = try Sections(try Self.writer().encode())
        sections.header[8] = 2
        #expect(refusal(try sections.assembled()).contains("written by a newer streamrec"))
        sections.header[8] = 1
        sections.header[12] = 1
        #expect(refusal(try sections.assembled()).contains("newer streamrec"))
    }

    @Test func vocabularyHashMismatchIsRefused() throws {
        var sections = try Sections(try Self.writer().encode())
        sections.manifest["items"] = ["a", "b", "d"]
        #expect(refusal(try sections.assembled()).contains("item vocabulary hash mismatch"))
    }

    @Test func tensorsOutsideTheBlobAreRefused() throws {
        let original = try Sections(try Self.writer().encode())
        func withTensor(_ change: (inout [String: Any]) -> Void) throws -> [UInt8] {
            var sections = original
            var tensors = sections.manifest["tensors"] as! [[String: Any]]
            change(&tensors[1])
            sections.manifest["tensors"] = tensors
            return try sections.assembled()
        }
        #expect(refusal(try withTensor { $0["offset"] = 4096 }).contains("lies outside"))
        #expect(refusal(try withTensor { $0["shape"] = [4] }).contains("has shape [4] but 12 bytes"))
        #expect(refusal(try withTensor { $0["shape"] = [Int.max, 4]; $0["length"] = 16 }).contains("has shape"))
        #expect(refusal(try withTensor { $0["offset"] = 4 }).contains("not 64-byte aligned"))
        #expect(refusal(try withTensor { $0["dtype"] = "f16" }).contains("dtype 'f16'"))
        #expect(refusal(try withTensor { $0["name"] = "weights" }).contains("appears twice"))
    }

    @Test func missingFileNamesThePath() {
        let error = modelError { _ = try Snapshot.read(path: "/nonexistent/model.snap") }
        #expect(error?.code == .badSnapshot)
        #expect(error?.message.contains("/nonexistent/model.snap") == true)
    }
}
