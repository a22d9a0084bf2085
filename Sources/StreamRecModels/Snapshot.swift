// Snapshot container, format v1, shared by every model. All integers little-endian.
//
//   offset    size  field
//   0         8     magic "STRECSNP"
//   8         4     format version (UInt32) = 1
//   12        4     flags (UInt32); v1 defines none, so 0
//   16        8     manifest length M (UInt64)
//   24        M     manifest, UTF-8 JSON (SnapshotManifest)
//   24+M      8     blob length B (UInt64)
//   32+M      B     blob: every tensor, 4-byte little-endian elements, each at a 64-byte aligned
//                   offset (so a later reader can map tensors in place)
//   32+M+B    8     checksum: FNV-1a 64 over every byte before it
//
// Reading verifies the whole file before anything is served from it and names what is wrong, so
// a corrupt or foreign file is refused at load time rather than producing bad answers.
import Foundation
import StreamRecNumerics
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum SnapshotFormat {
    public static let magic: [UInt8] = Array("STRECSNP".utf8)
    public static let version: UInt32 = 1
    /// Flag bits this build understands; a file with any other bit set needs a newer reader.
    public static let knownFlags: UInt32 = 0
    public static let tensorAlignment = 64
    /// Recorded in every manifest so a snapshot can be traced to the code that wrote it.
    public static let codeVersion = "streamrec-models 1.0"
    /// magic + version + flags + manifest length + blob length + checksum, with empty manifest and blob.
    static let minimumFileSize = 8 + 4 + 4 + 8 + 8 + 8

    /// Hash of the item vocabulary as stored in the manifest: FNV-1a 64 of the ids joined with
    /// "\n", as 16 lowercase hex digits.
    public static func vocabularyHash(_ items: [String]) -> String {
        var hash = FNV1a64()
        for (index, item) in items.enumerated() {
            if index > 0 { hash.update(UInt8(ascii: "\n")) }
            hash.update(item.utf8)
        }
        return hexDigits(hash.value, width: 16)
    }

    static func hexDigits(_ value: UInt64, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

/// FNV-1a, 64-bit: the snapshot checksum and the vocabulary hash. Not cryptographic; it catches
/// corruption and mix-ups, not tampering.
public struct FNV1a64: Sendable {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    private static let prime: UInt64 = 0x0000_0100_0000_01b3

    public init() {}

    @inline(__always)
    public mutating func update(_ byte: UInt8) {
        value = (value ^ UInt64(byte)) &* Self.prime
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for byte in bytes { h = (h ^ UInt64(byte)) &* Self.prime }
        value = h
    }

    public mutating func update<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        var h = value
        for byte in bytes { h = (h ^ UInt64(byte)) &* Self.prime }
        value = h
    }

    public static func hash<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var hash = FNV1a64()
        hash.update(bytes)
        return hash.value
    }
}

public enum TensorDType: String, Sendable {
    case f32
    case i32
}

public struct SnapshotManifest: Codable, Sendable, Equatable {
    public struct TensorEntry: Codable, Sendable, Equatable {
        public var name: String
        /// "f32" or "i32"; kept as text so an unknown type is reported by name, not as a JSON error.
        public var dtype: String
        public var shape: [Int]
        /// Bytes from the start of the blob.
        public var offset: Int
        public var length: Int

        public init(name: String, dtype: String, shape: [Int], offset: Int, length: Int) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.offset = offset
            self.length = length
        }
    }

    public struct TrainingSummary: Codable, Sendable, Equatable {
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
    public var training: TrainingSummary
    public var metrics: [String: Double]
    /// ISO-8601, UTC.
    public var createdAt: String
    public var codeVersion: String
    public var tensors: [TensorEntry]
}

/// Collects a model's tensors and metadata, then writes a snapshot atomically.
public struct SnapshotWriter: Sendable {
    public var kind: String
    public var items: [String]
    public var hyperParameters: [String: String]
    public var training: SnapshotManifest.TrainingSummary
    public var metrics: [String: Double]
    /// Nil: the content version (see `contentVersion`).
    public var modelVersion: String?
    public private(set) var tensors: [SnapshotManifest.TensorEntry] = []
    private var blob: [UInt8] = []

    public init(kind: String, items: [String], hyperParameters: [String: String],
                training: SnapshotManifest.TrainingSummary, metrics: [String: Double] = [:]) {
        self.kind = kind
        self.items = items
        self.hyperParameters = hyperParameters
        self.training = training
        self.metrics = metrics
    }

    public mutating func add(_ name: String, floats: [Float], shape: [Int]) throws {
        try checkNew(name, shape: shape, count: floats.count)
        append(name, .f32, shape: shape, count: floats.count) { out in
            for value in floats { Self.putLittleEndian(value.bitPattern, into: &out) }
        } native: { out in
            floats.withUnsafeBytes { out.append(contentsOf: $0) }
        }
    }

    public mutating func add(_ name: String, ints: [Int32], shape: [Int]) throws {
        try checkNew(name, shape: shape, count: ints.count)
        append(name, .i32, shape: shape, count: ints.count) { out in
            for value in ints { Self.putLittleEndian(value, into: &out) }
        } native: { out in
            ints.withUnsafeBytes { out.append(contentsOf: $0) }
        }
    }

    private func checkNew(_ name: String, shape: [Int], count: Int) throws {
        guard !tensors.contains(where: { $0.name == name }) else {
            throw ModelError(.badSnapshot, "snapshot of kind '\(kind)': tensor '\(name)' was added twice; give each tensor its own name")
        }
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == count else {
            throw ModelError(.badSnapshot, "snapshot of kind '\(kind)': tensor '\(name)' has \(count) values, which shape \(shape) does not describe")
        }
    }

    private mutating func append(_ name: String, _ dtype: TensorDType, shape: [Int], count: Int,
                                 portable: (inout [UInt8]) -> Void, native: (inout [UInt8]) -> Void) {
        let padding = (SnapshotFormat.tensorAlignment - blob.count % SnapshotFormat.tensorAlignment) % SnapshotFormat.tensorAlignment
        blob.append(contentsOf: repeatElement(0, count: padding))
        let offset = blob.count
        #if _endian(little)
        native(&blob)
        #else
        portable(&blob)
        #endif
        tensors.append(.init(name: name, dtype: dtype.rawValue, shape: shape, offset: offset, length: count * 4))
    }

    /// A short hash of everything that decides the model's answers (kind, hyper-parameters,
    /// vocabulary, tensor table and weights), so retraining on the same data gives the same version.
    public var contentVersion: String {
        var hash = FNV1a64()
        hash.update(kind.utf8)
        for key in hyperParameters.keys.sorted() {
            hash.update("\n\(key)=\(hyperParameters[key]!)".utf8)
        }
        hash.update("\n\(SnapshotFormat.vocabularyHash(items))".utf8)
        for tensor in tensors {
            hash.update("\n\(tensor.name):\(tensor.dtype):\(tensor.shape):\(tensor.offset)".utf8)
        }
        hash.update(blob)
        return String(SnapshotFormat.hexDigits(hash.value, width: 16).suffix(12))
    }

    /// The complete file contents.
    public func encode(createdAt: Date = Date()) throws -> [UInt8] {
        if let bad = metrics.first(where: { !$0.value.isFinite }) {
            throw ModelError(.badSnapshot, "snapshot of kind '\(kind)': metric '\(bad.key)' is \(bad.value); record only finite metrics")
        }
        let dateFormatter = ISO8601DateFormatter()
        dateFormatter.timeZone = TimeZone(identifier: "UTC")
        let manifest = SnapshotManifest(
            kind: kind, modelVersion: modelVersion ?? contentVersion, hyperParameters: hyperParameters, items: items,
            itemsHash: SnapshotFormat.vocabularyHash(items), training: training, metrics: metrics,
            createdAt: dateFormatter.string(from: createdAt), codeVersion: SnapshotFormat.codeVersion, tensors: tensors)
        let encoder = JSONEncoder()
        // Sorted keys: the same model gives byte-identical manifests, which diff and hash cleanly.
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(manifest)

        var out: [UInt8] = []
        out.reserveCapacity(SnapshotFormat.minimumFileSize + json.count + blob.count)
        out.append(contentsOf: SnapshotFormat.magic)
        Self.putLittleEndian(SnapshotFormat.version, into: &out)
        Self.putLittleEndian(UInt32(0), into: &out)
        Self.putLittleEndian(UInt64(json.count), into: &out)
        out.append(contentsOf: json)
        Self.putLittleEndian(UInt64(blob.count), into: &out)
        out.append(contentsOf: blob)
        let checksum = out.withUnsafeBytes { raw in
            var hash = FNV1a64()
            hash.update(raw)
            return hash.value
        }
        Self.putLittleEndian(checksum, into: &out)
        return out
    }

    /// Writes to a temporary file beside `path`, flushes it to disk, then renames it over `path`,
    /// so a reader (or a crash) never sees half a snapshot.
    public func write(to path: String, createdAt: Date = Date()) throws {
        do {
            try DurableFile.replace(path, with: try encode(createdAt: createdAt))
        } catch let failure as DurableFile.Failure {
            throw ModelError(.badSnapshot, "cannot write snapshot \(path): \(failure); check the directory exists and is writable and the disk has room")
        }
    }

    static func putLittleEndian<T: FixedWidthInteger>(_ value: T, into out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }
}

/// A verified snapshot in memory.
public struct Snapshot: Sendable {
    public let path: String
    public let formatVersion: UInt32
    public let manifest: SnapshotManifest
    /// The whole file (possibly memory-mapped); tensors are read from `blobStart` on.
    private let file: Data
    private let blobStart: Int

    public static func read(path: String) throws -> Snapshot {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .mappedIfSafe)
        } catch {
            throw ModelError(.badSnapshot, "snapshot \(path): cannot read the file (\(error.localizedDescription)); check the path, or train one with `streamrec train`")
        }
        return try decode(data, path: path)
    }

    /// Verifies, in order: size, magic, version, flags, the section lengths against the file size,
    /// the checksum, the manifest, the vocabulary hash and every tensor's bounds. `path` is only
    /// used to name the file in errors.
    public static func decode(_ data: Data, path: String) throws -> Snapshot {
        func refuse(_ problem: String, _ remedy: String = "re-copy the file or retrain the model") -> ModelError {
            ModelError(.badSnapshot, "snapshot \(path): \(problem); \(remedy)")
        }
        let layout = try data.withUnsafeBytes { raw -> (version: UInt32, manifestLength: Int, blobLength: Int) in
            let size = raw.count
            guard size >= 8 else {
                throw refuse("the file is \(size) bytes, too short to be a snapshot (truncated?)")
            }
            guard raw.prefix(8).elementsEqual(SnapshotFormat.magic) else {
                let found = raw.prefix(8).map { (0x20...0x7e).contains($0) ? String(UnicodeScalar($0)) : "." }.joined()
                throw refuse("wrong magic \"\(found)\" (expected \"STRECSNP\"): not a StreamRec snapshot",
                             "pass a file written by `streamrec train`")
            }
            guard size >= 16 else { throw refuse("truncated: the file ends inside the header (\(size) bytes)") }
            let version: UInt32 = loadLittleEndian(raw, at: 8)
            guard version <= SnapshotFormat.version else {
                throw refuse("format version \(version) was written by a newer streamrec (this build reads up to version \(SnapshotFormat.version))",
                             "upgrade streamrec to load it")
            }
            guard version >= 1 else { throw refuse("format version \(version) is not a valid version (the header is corrupt)") }
            let flags: UInt32 = loadLittleEndian(raw, at: 12)
            guard flags & ~SnapshotFormat.knownFlags == 0 else {
                throw refuse("flags 0x\(String(flags, radix: 16)) use features written by a newer streamrec (this build knows none)",
                             "upgrade streamrec to load it")
            }
            guard size >= SnapshotFormat.minimumFileSize else {
                throw refuse("truncated: the file is \(size) bytes, less than the \(SnapshotFormat.minimumFileSize)-byte minimum")
            }
            // Lengths before the checksum, so a short file is reported as truncated, not as corrupt.
            let manifestLength: UInt64 = loadLittleEndian(raw, at: 16)
            // After the manifest come at least 16 bytes: the blob length and the checksum.
            guard manifestLength <= UInt64(size - 24 - 16) else {
                throw refuse("truncated or corrupt: the manifest length \(manifestLength) runs past the end of the file (\(size) bytes)")
            }
            let manifestEnd = 24 + Int(manifestLength)
            let blobLength: UInt64 = loadLittleEndian(raw, at: manifestEnd)
            let available = UInt64(size - manifestEnd - 16)
            guard blobLength <= available else {
                throw refuse("truncated or corrupt: the blob is declared as \(blobLength) bytes but only \(available) remain in the \(size)-byte file")
            }
            guard blobLength == available else {
                throw refuse("corrupt: \(available - blobLength) unexpected bytes after the blob (the declared lengths do not match the file size \(size))")
            }
            let stored: UInt64 = loadLittleEndian(raw, at: size - 8)
            var hash = FNV1a64()
            hash.update(UnsafeRawBufferPointer(rebasing: raw[0..<(size - 8)]))
            guard stored == hash.value else {
                throw refuse("checksum mismatch (stored \(SnapshotFormat.hexDigits(stored, width: 16)), computed \(SnapshotFormat.hexDigits(hash.value, width: 16))): the file is corrupt")
            }
            return (version, Int(manifestLength), Int(blobLength))
        }
        let manifestEnd = 24 + layout.manifestLength
        let blobStart = manifestEnd + 8
        let blobLength = layout.blobLength

        let manifest: SnapshotManifest
        do {
            manifest = try JSONDecoder().decode(SnapshotManifest.self, from: data.subdata(in: (data.startIndex + 24)..<(data.startIndex + manifestEnd)))
        } catch {
            throw refuse("the manifest is not a valid format-v1 manifest (\(error))")
        }
        let vocabularyHash = SnapshotFormat.vocabularyHash(manifest.items)
        guard vocabularyHash == manifest.itemsHash else {
            throw refuse("item vocabulary hash mismatch (manifest says \(manifest.itemsHash), its \(manifest.items.count) items hash to \(vocabularyHash))")
        }
        var names = Set<String>()
        for tensor in manifest.tensors {
            guard names.insert(tensor.name).inserted else { throw refuse("tensor '\(tensor.name)' appears twice in the tensor table") }
            guard TensorDType(rawValue: tensor.dtype) != nil else {
                throw refuse("tensor '\(tensor.name)' has dtype '\(tensor.dtype)', which this build does not know (f32, i32)", "upgrade streamrec to load it")
            }
            // Overflow-checked: a crafted shape or offset must be refused, not trap.
            var elements = 1
            var shapeValid = true
            for dimension in tensor.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                if dimension < 0 || overflow { shapeValid = false; break }
                elements = product
            }
            let (bytes, bytesOverflow) = elements.multipliedReportingOverflow(by: 4)
            guard shapeValid, !bytesOverflow, bytes == tensor.length else {
                throw refuse("tensor '\(tensor.name)' has shape \(tensor.shape) but \(tensor.length) bytes")
            }
            let (end, endOverflow) = tensor.offset.addingReportingOverflow(tensor.length)
            guard tensor.offset >= 0, !endOverflow, end <= blobLength else {
                throw refuse("tensor '\(tensor.name)' (\(tensor.length) bytes at offset \(tensor.offset)) lies outside the \(blobLength)-byte blob")
            }
            guard tensor.offset % SnapshotFormat.tensorAlignment == 0 else {
                throw refuse("tensor '\(tensor.name)' offset \(tensor.offset) is not \(SnapshotFormat.tensorAlignment)-byte aligned")
            }
        }
        return Snapshot(path: path, formatVersion: layout.version, manifest: manifest, file: data, blobStart: blobStart)
    }

    private init(path: String, formatVersion: UInt32, manifest: SnapshotManifest, file: Data, blobStart: Int) {
        self.path = path
        self.formatVersion = formatVersion
        self.manifest = manifest
        self.file = file
        self.blobStart = blobStart
    }

    public func tensor(named name: String) -> SnapshotManifest.TensorEntry? {
        manifest.tensors.first { $0.name == name }
    }

    /// The tensor's values; `shape`, when given, must match exactly.
    public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
        let entry = try entry(name, .f32, shape: shape)
        return copyElements(entry) { Float(bitPattern: UInt32(littleEndian: $0)) }
    }

    public func ints(_ name: String, shape: [Int]? = nil) throws -> [Int32] {
        let entry = try entry(name, .i32, shape: shape)
        return copyElements(entry) { Int32(bitPattern: UInt32(littleEndian: $0)) }
    }

    private func entry(_ name: String, _ dtype: TensorDType, shape: [Int]?) throws -> SnapshotManifest.TensorEntry {
        guard let entry = tensor(named: name) else {
            throw ModelError(.badSnapshot, "snapshot \(path): tensor '\(name)' is missing (a '\(manifest.kind)' model needs it); retrain the model")
        }
        guard entry.dtype == dtype.rawValue else {
            throw ModelError(.badSnapshot, "snapshot \(path): tensor '\(name)' is \(entry.dtype), expected \(dtype.rawValue); retrain the model")
        }
        if let shape, shape != entry.shape {
            throw ModelError(.badSnapshot, "snapshot \(path): tensor '\(name)' has shape \(entry.shape), expected \(shape); the snapshot does not match its manifest, retrain the model")
        }
        return entry
    }

    /// Copies element by element: Data's storage promises no alignment, and the file is
    /// little-endian whatever the host is.
    private func copyElements<T>(_ entry: SnapshotManifest.TensorEntry, _ convert: (UInt32) -> T) -> [T] {
        let count = entry.length / 4
        return file.withUnsafeBytes { raw in
            let base = blobStart + entry.offset
            return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                for i in 0..<count {
                    buffer[i] = convert(raw.loadUnaligned(fromByteOffset: base + 4 * i, as: UInt32.self))
                }
                initialized = count
            }
        }
    }
}

private func loadLittleEndian<T: FixedWidthInteger>(_ raw: UnsafeRawBufferPointer, at offset: Int) -> T {
    T(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: T.self))
}

// MARK: - parameter stores (what every neural model's save and load share)

extension SnapshotWriter {
    /// Adds every tensor of a parameter store under its own name and shape.
    mutating func add(_ store: ParameterStore) throws {
        for entry in store.entries { try add(entry.name, floats: store.floats(entry.name), shape: entry.shape) }
    }
}

extension Snapshot {
    /// Refuses an empty item vocabulary or one that lists an item twice.
    func checkItems() throws {
        guard !manifest.items.isEmpty, Set(manifest.items).count == manifest.items.count else {
            throw ModelError(.badSnapshot, "snapshot \(path): the item vocabulary is empty or lists an item twice; retrain the model")
        }
    }

    /// Fills every tensor of `store` from the snapshot, checking each name and shape and that
    /// every weight is finite (a NaN would rank garbage silently).
    func load(into store: ParameterStore) throws {
        for entry in store.entries {
            let values = try floats(entry.name, shape: entry.shape)
            guard values.allSatisfy({ $0.isFinite }) else {
                throw ModelError(.badSnapshot, "snapshot \(path): tensor '\(entry.name)' holds NaN or infinite weights; retrain the model (lower the learning rate or set a gradient clip)")
            }
            store.load(entry.name, values)
        }
    }
}
