// Snapshot format v1, shared by every model. A file is:
//
//   offset  size  field
//   0       8     magic "STRECSNP"
//   8       4     format version (UInt32 LE) = 1
//   12      4     flags (UInt32 LE), 0
//   16      8     manifest length M (UInt64 LE)
//   24      M     manifest, JSON (SnapshotManifest)
//   24+M    8     blob length B (UInt64 LE)
//   32+M    B     blob: every tensor, 4-byte elements, each at a 64-byte aligned offset
//   32+M+B  8     checksum: FNV-1a 64 over every byte before it (UInt64 LE)
//
// Reading verifies all of it and names what is wrong, so a corrupt file is refused before it
// can serve.
import Foundation

public struct SnapshotManifest: Codable, Sendable, Equatable {
    public struct Tensor: Codable, Sendable, Equatable {
        public var name: String
        public var dtype: String          // "f32" | "i32"
        public var shape: [Int]
        public var offset: Int            // bytes into the blob
        public var length: Int            // bytes
    }
    public struct TrainingData: Codable, Sendable, Equatable {
        public var users: Int
        public var items: Int
        public var interactions: Int
        public var source: String
        public init(users: Int, items: Int, interactions: Int, source: String) {
            self.users = users
            self.items = items
            self.interactions = interactions
            self.source = source
        }
    }

    public var kind: String
    public var modelVersion: String
    public var hyperParameters: [String: String]
    /// Model row i is the external item id items[i].
    public var items: [String]
    public var itemsHash: String
    public var training: TrainingData
    public var metrics: [String: Double]
    public var createdAt: String
    public var codeVersion: String
    public var tensors: [Tensor]
}

public enum SnapshotFormat {
    public static let magic: [UInt8] = Array("STRECSNP".utf8)
    public static let version: UInt32 = 1
    public static let codeVersion = "streamrec 0.1"

    public static func fnv1a(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = seed
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return h
    }

    public static func fnv1a(_ bytes: [UInt8], seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        bytes.withUnsafeBytes { fnv1a($0, seed: seed) }
    }

    public static func itemsHash(_ items: [String]) -> String {
        String(format: "%016llx", fnv1a(Array(items.joined(separator: "\n").utf8)))
    }
}

/// Collects tensors and writes a snapshot atomically (temp file + rename).
public struct SnapshotWriter {
    private var blob: [UInt8] = []
    private var tensors: [SnapshotManifest.Tensor] = []
    public var kind: String
    public var items: [String]
    public var hyperParameters: [String: String]
    public var training: SnapshotManifest.TrainingData
    public var metrics: [String: Double] = [:]

    public init(kind: String, items: [String], hyperParameters: [String: String], training: SnapshotManifest.TrainingData) {
        self.kind = kind
        self.items = items
        self.hyperParameters = hyperParameters
        self.training = training
    }

    public mutating func add(_ name: String, floats: [Float], shape: [Int]) {
        precondition(shape.reduce(1, *) == floats.count, "tensor \(name): shape \(shape) does not hold \(floats.count) values")
        append(name, "f32", shape, floats.withUnsafeBytes { Array($0) })
    }

    public mutating func add(_ name: String, ints: [Int32], shape: [Int]) {
        precondition(shape.reduce(1, *) == ints.count, "tensor \(name): shape \(shape) does not hold \(ints.count) values")
        append(name, "i32", shape, ints.withUnsafeBytes { Array($0) })
    }

    private mutating func append(_ name: String, _ dtype: String, _ shape: [Int], _ bytes: [UInt8]) {
        while blob.count % 64 != 0 { blob.append(0) }
        tensors.append(.init(name: name, dtype: dtype, shape: shape, offset: blob.count, length: bytes.count))
        blob += bytes
    }

    /// The content version: a hash of the weights and the vocabulary, so equal models get equal versions.
    public var contentVersion: String {
        var h = SnapshotFormat.fnv1a(blob)
        h = SnapshotFormat.fnv1a(Array(items.joined(separator: "\n").utf8), seed: h)
        return String(format: "%012llx", h & 0xFFFF_FFFF_FFFF)
    }

    public func write(to path: String) throws {
        let manifest = SnapshotManifest(
            kind: kind, modelVersion: contentVersion, hyperParameters: hyperParameters, items: items,
            itemsHash: SnapshotFormat.itemsHash(items), training: training, metrics: metrics,
            createdAt: ISO8601DateFormatter().string(from: Date()), codeVersion: SnapshotFormat.codeVersion, tensors: tensors)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(manifest)
        var out: [UInt8] = SnapshotFormat.magic
        out.reserveCapacity(40 + json.count + blob.count)
        Self.put(&out, SnapshotFormat.version)
        Self.put(&out, UInt32(0))
        Self.put(&out, UInt64(json.count))
        out += json
        Self.put(&out, UInt64(blob.count))
        out += blob
        Self.put(&out, SnapshotFormat.fnv1a(out))
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(UUID().uuidString.prefix(8))")
        try Data(out).write(to: temp)
        if FileManager.default.fileExists(atPath: path) {
            _ = try FileManager.default.replaceItemAt(url, withItemAt: temp)
        } else {
            try FileManager.default.moveItem(at: temp, to: url)
        }
    }

    private static func put<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }
}

/// A verified snapshot in memory.
public struct Snapshot: Sendable {
    public let manifest: SnapshotManifest
    public let path: String
    private let blob: [UInt8]

    public static func read(path: String) throws -> Snapshot {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError(.badSnapshot, "\(path): cannot read the file (missing or unreadable)")
        }
        return try parse([UInt8](data), path: path)
    }

    public static func parse(_ bytes: [UInt8], path: String) throws -> Snapshot {
        func bad(_ why: String) -> ModelError { ModelError(.badSnapshot, "\(path): \(why); the snapshot was refused") }
        guard bytes.count >= 40 else { throw bad("file is \(bytes.count) bytes, too short for a snapshot (truncated?)") }
        guard Array(bytes[0..<8]) == SnapshotFormat.magic else { throw bad("not a StreamRec snapshot (wrong magic)") }
        let version: UInt32 = read(bytes, 8)
        guard version <= SnapshotFormat.version else {
            throw bad("format version \(version) was written by a newer streamrec (this one reads up to \(SnapshotFormat.version)); upgrade streamrec")
        }
        guard version >= 1 else { throw bad("format version \(version) is not valid") }
        let stored: UInt64 = read(bytes, bytes.count - 8)
        let computed = bytes.withUnsafeBytes { SnapshotFormat.fnv1a(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 8)])) }
        guard stored == computed else { throw bad("checksum mismatch (file corrupt or truncated)") }
        let manifestLength = Int(clamping: read(bytes, 16) as UInt64)
        guard manifestLength <= bytes.count - 40 else { throw bad("manifest length \(manifestLength) exceeds the file size") }
        let manifestEnd = 24 + manifestLength
        let blobLength = Int(clamping: read(bytes, manifestEnd) as UInt64)
        guard manifestEnd + 8 + blobLength + 8 == bytes.count else {
            throw bad("blob length \(blobLength) does not match the file size \(bytes.count)")
        }
        let manifest: SnapshotManifest
        do {
            manifest = try JSONDecoder().decode(SnapshotManifest.self, from: Data(bytes[24..<manifestEnd]))
        } catch {
            throw bad("manifest is not valid: \(error)")
        }
        guard SnapshotFormat.itemsHash(manifest.items) == manifest.itemsHash else {
            throw bad("item vocabulary hash mismatch")
        }
        for t in manifest.tensors {
            guard t.dtype == "f32" || t.dtype == "i32" else { throw bad("tensor \(t.name) has unknown dtype \(t.dtype)") }
            guard t.offset >= 0, t.length >= 0, t.offset + t.length <= blobLength,
                  t.shape.reduce(1, *) * 4 == t.length else {
                throw bad("tensor \(t.name) (shape \(t.shape), \(t.length) bytes at \(t.offset)) does not fit the blob")
            }
        }
        let blob = Array(bytes[(manifestEnd + 8)..<(manifestEnd + 8 + blobLength)])
        return Snapshot(manifest: manifest, path: path, blob: blob)
    }

    private init(manifest: SnapshotManifest, path: String, blob: [UInt8]) {
        self.manifest = manifest
        self.path = path
        self.blob = blob
    }

    private static func read<T: FixedWidthInteger>(_ bytes: [UInt8], _ at: Int) -> T {
        var v = T.zero
        withUnsafeMutableBytes(of: &v) { dst in
            for i in 0..<MemoryLayout<T>.size { dst[i] = bytes[at + i] }
        }
        return T(littleEndian: v)
    }

    private func tensor(_ name: String, _ dtype: String, shape: [Int]?) throws -> SnapshotManifest.Tensor {
        guard let t = manifest.tensors.first(where: { $0.name == name }) else {
            throw ModelError(.badSnapshot, "\(path): tensor \(name) is missing (a \(manifest.kind) snapshot needs it)")
        }
        guard t.dtype == dtype else { throw ModelError(.badSnapshot, "\(path): tensor \(name) is \(t.dtype), expected \(dtype)") }
        if let shape, shape != t.shape {
            throw ModelError(.badSnapshot, "\(path): tensor \(name) has shape \(t.shape), expected \(shape)")
        }
        return t
    }

    public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
        let t = try tensor(name, "f32", shape: shape)
        return copy(t, as: Float.self)
    }

    public func ints(_ name: String, shape: [Int]? = nil) throws -> [Int32] {
        let t = try tensor(name, "i32", shape: shape)
        return copy(t, as: Int32.self)
    }

    /// Copies the bytes out (the blob is a byte array; rebinding its memory would be unsound).
    private func copy<T>(_ t: SnapshotManifest.Tensor, as: T.Type) -> [T] {
        let count = t.length / MemoryLayout<T>.stride
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            blob.withUnsafeBytes { raw in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[t.offset..<(t.offset + t.length)]))
            }
            initialized = count
        }
    }

    public func shape(_ name: String) -> [Int]? { manifest.tensors.first { $0.name == name }?.shape }
}
