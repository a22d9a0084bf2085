// Text-embedding cache: one vector per item id, the text it was computed from (as a hash), and
// the encoder that computed it, so `streamrec embed` re-runs embed only new or changed items and
// the models and the service read vectors without loading the encoder.
//
// Shape legend
//   N  items in the cache          D  embedding width (384 for all-MiniLM-L6-v2)
//
// File: the snapshot container (Snapshot.swift: magic, version, JSON manifest, 64-byte aligned
// blob, FNV-1a checksum), kind "embeddings":
//   manifest.items                  item ids, row i = items[i]
//   manifest.hyperParameters        "cache_version" ("1"), "model_id", "dimension"
//   tensor "vectors"      f32 [N, D] one vector per item (unit length when the encoder normalises)
//   tensor "text_hashes"  i32 [N, 2] FNV-1a 64 of each item's text, low then high 32 bits
//                                    (0 = unknown text: imported vectors; never re-embedded)
// Model id: "<name>@<fnv of config.json>-<weights bytes>" (see `modelID`), so another checkpoint
// (or another config) in the same folder name invalidates the cache.
import Foundation

/// What text stands for an item. ML-1M's extra column is its genres (useful: "Toy Story (1995)
/// Animation|Children's|Comedy"); Beauty's is the ASIN, an opaque identifier that would only add
/// noise tokens. The rule, per item, so it also holds for items arriving on the stream:
///   extra empty or an identifier (one token of letters and digits containing a digit, no
///   spaces, e.g. "B004756YJA")  -> title alone, or the extra when the title is empty
///   otherwise                     -> "title extra"
public enum ItemText {
    public static func text(title: String, extra: String?) -> String {
        let title = title.trimmingCharacters(in: .whitespaces)
        let extra = (extra ?? "").trimmingCharacters(in: .whitespaces)
        if extra.isEmpty { return title }
        if title.isEmpty { return extra }
        return isIdentifier(extra) ? title : title + " " + extra
    }

    static func isIdentifier(_ s: String) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) }
            && s.unicodeScalars.contains { CharacterSet.decimalDigits.contains($0) }
    }

    /// items.tsv: a header line, then `item_id<TAB>title[<TAB>extra]`; returns (id, text) in file order.
    public static func load(itemsTSV path: String) throws -> [(id: String, text: String)] {
        let content: String
        do {
            content = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ModelError(.badData, "\(path): cannot read the items file (\(error.localizedDescription)); pass an items.tsv (item_id<TAB>title<TAB>extra)")
        }
        var out: [(id: String, text: String)] = []
        for (index, line) in content.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where index > 0 {
            let line = line.hasSuffix("\r") ? line.dropLast() : line
            if line.isEmpty { continue }
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 2, !fields[0].isEmpty else {
                throw ModelError(.badData, "\(path):\(index + 1): too few fields: expected 'item_id<TAB>title[<TAB>extra]'")
            }
            out.append((String(fields[0]), text(title: String(fields[1]), extra: fields.count > 2 ? String(fields[2]) : nil)))
        }
        guard !out.isEmpty else { throw ModelError(.badData, "\(path): no items after the header line") }
        return out
    }
}

/// Not synchronised: one owner mutates it at a time (the `embed` command, or the service's item
/// ingestor thread); readers load their own copy from the file.
public final class EmbeddingCache: @unchecked Sendable {
    public static let kind = "embeddings"
    public static let cacheVersion = "1"

    public let modelID: String
    public let dimension: Int
    public private(set) var items: [String] = []
    /// [N, D], row-major.
    public private(set) var vectors: [Float] = []
    public private(set) var textHashes: [UInt64] = []
    private var rowOf: [String: Int] = [:]

    public init(modelID: String, dimension: Int) {
        self.modelID = modelID
        self.dimension = dimension
    }

    public var count: Int { items.count }

    /// The encoder's identity: folder name, a hash of config.json and the weights' size.
    public static func modelID(name: String, configJSON: [UInt8], weightsBytes: Int) -> String {
        "\(name)@\(SnapshotFormat.hexDigits(FNV1a64.hash(configJSON), width: 16))-\(weightsBytes)"
    }

    /// The id of the encoder in `directory` (config.json and model.safetensors), without loading it.
    public static func modelID(directory: URL) throws -> String {
        let config = directory.appendingPathComponent("config.json")
        guard let json = FileManager.default.contents(atPath: config.path) else {
            throw ModelError(.badData, "\(config.path): missing; fetch the encoder with ops/fetch-minilm.sh (or pass --model DIR)")
        }
        let weights = (try? FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent("model.safetensors").path)[.size] as? Int) ?? 0
        return modelID(name: directory.standardizedFileURL.lastPathComponent, configJSON: [UInt8](json), weightsBytes: weights ?? 0)
    }

    public static func textHash(_ text: String) -> UInt64 {
        // 0 marks "text unknown" (imports); a real text never hashes to it in practice, but make sure.
        let h = FNV1a64.hash(text.utf8)
        return h == 0 ? 1 : h
    }

    public func row(of id: String) -> Int? { rowOf[id] }

    public func vector(for id: String) -> ArraySlice<Float>? {
        guard let r = rowOf[id] else { return nil }
        return vectors[(r * dimension)..<((r + 1) * dimension)]
    }

    /// True when `id` has no vector, or one computed from another text.
    public func needsEmbedding(id: String, text: String) -> Bool {
        guard let r = rowOf[id] else { return true }
        let stored = textHashes[r]
        return stored != 0 && stored != Self.textHash(text)
    }

    /// Adds or replaces one item's vector. `textHash` 0: the text is unknown (imported).
    public func add(id: String, vector: some Collection<Float>, textHash: UInt64) throws {
        guard vector.count == dimension else {
            throw ModelError(.badData, "embedding of item '\(id)' has \(vector.count) values, the cache holds \(dimension)-dimensional vectors (model \(modelID)); embed with the same model or start a new cache")
        }
        guard vector.allSatisfy({ $0.isFinite }) else {
            throw ModelError(.badData, "embedding of item '\(id)' holds NaN or infinite values; check the encoder or the imported file")
        }
        if let r = rowOf[id] {
            vectors.replaceSubrange((r * dimension)..<((r + 1) * dimension), with: vector)
            textHashes[r] = textHash
        } else {
            rowOf[id] = items.count
            items.append(id)
            vectors.append(contentsOf: vector)
            textHashes.append(textHash)
        }
    }

    /// Embeds what is new or changed among `items` (id, text) with `embed`, `chunk` texts per
    /// call, and stores the vectors. `progress(done, total)` after every chunk. Returns how many
    /// items were embedded.
    @discardableResult
    public func update(_ items: [(id: String, text: String)], chunk: Int = 512, embed: ([String]) throws -> [[Float]],
                       progress: ((Int, Int) -> Void)? = nil) throws -> Int {
        var seen = Set<String>()
        // The last text of an id wins, as the file would be read top to bottom.
        let latest = items.reversed().filter { seen.insert($0.id).inserted }.reversed()
        let todo = latest.filter { needsEmbedding(id: $0.id, text: $0.text) }
        var done = 0
        while done < todo.count {
            let part = todo[done..<min(todo.count, done + max(1, chunk))]
            let vectors = try embed(part.map(\.text))
            guard vectors.count == part.count else {
                throw ModelError(.badData, "the encoder returned \(vectors.count) vectors for \(part.count) texts")
            }
            for (item, vector) in zip(part, vectors) { try add(id: item.id, vector: vector, textHash: Self.textHash(item.text)) }
            done += part.count
            progress?(done, todo.count)
        }
        return todo.count
    }

    public func save(to path: String) throws {
        var writer = SnapshotWriter(kind: Self.kind, items: items,
                                    hyperParameters: ["cache_version": Self.cacheVersion, "model_id": modelID, "dimension": "\(dimension)"],
                                    training: .init(users: 0, items: items.count, interactions: 0, source: modelID))
        try writer.add("vectors", floats: vectors, shape: [items.count, dimension])
        var halves = [Int32](repeating: 0, count: 2 * items.count)
        for (i, h) in textHashes.enumerated() {
            halves[2 * i] = Int32(bitPattern: UInt32(truncatingIfNeeded: h))
            halves[2 * i + 1] = Int32(bitPattern: UInt32(truncatingIfNeeded: h >> 32))
        }
        try writer.add("text_hashes", ints: halves, shape: [items.count, 2])
        try writer.write(to: path)
    }

    public static func load(path: String) throws -> EmbeddingCache {
        let snapshot = try Snapshot.read(path: path)
        let m = snapshot.manifest
        guard m.kind == kind else {
            throw ModelError(.badSnapshot, "\(path): holds a '\(m.kind)' snapshot, not an embedding cache; pass a file written by `streamrec embed`")
        }
        guard m.hyperParameters["cache_version"] == cacheVersion else {
            throw ModelError(.unsupported, "\(path): embedding cache version \(m.hyperParameters["cache_version"] ?? "absent"), this build reads version \(cacheVersion); re-run `streamrec embed` or upgrade streamrec")
        }
        guard let modelID = m.hyperParameters["model_id"], let dimension = Int(m.hyperParameters["dimension"] ?? ""), dimension > 0 else {
            throw ModelError(.badSnapshot, "\(path): the embedding cache manifest lacks model_id or dimension; re-run `streamrec embed`")
        }
        let n = m.items.count
        let vectors = try snapshot.floats("vectors", shape: [n, dimension])
        let halves = try snapshot.ints("text_hashes", shape: [n, 2])
        let cache = EmbeddingCache(modelID: modelID, dimension: dimension)
        cache.items = m.items
        cache.vectors = vectors
        cache.textHashes = (0..<n).map { UInt64(UInt32(bitPattern: halves[2 * $0])) | UInt64(UInt32(bitPattern: halves[2 * $0 + 1])) << 32 }
        for (i, id) in m.items.enumerated() {
            guard cache.rowOf.updateValue(i, forKey: id) == nil else {
                throw ModelError(.badSnapshot, "\(path): item '\(id)' appears twice in the embedding cache; re-run `streamrec embed` into a new file")
            }
        }
        return cache
    }

    /// Rows [ids.count, D] for the given ids (zeros where missing) and which ids were present.
    public func matrix(for ids: [String]) -> (vectors: [Float], present: [Bool]) {
        var out = [Float](repeating: 0, count: ids.count * dimension)
        var present = [Bool](repeating: false, count: ids.count)
        for (i, id) in ids.enumerated() {
            guard let r = rowOf[id] else { continue }
            present[i] = true
            for j in 0..<dimension { out[i * dimension + j] = vectors[r * dimension + j] }
        }
        return (out, present)
    }

    // MARK: - import of external vectors

    /// `item_id<TAB>v1 v2 ...` (values separated by spaces, tabs or commas), one item a line.
    public static func parseTSV(path: String) throws -> [(id: String, vector: [Float])] {
        let content: String
        do { content = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ModelError(.badData, "\(path): cannot read (\(error.localizedDescription))")
        }
        var out: [(id: String, vector: [Float])] = []
        for (index, line) in content.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            guard let tab = line.firstIndex(of: "\t") else {
                throw ModelError(.badData, "\(path):\(index + 1): expected 'item_id<TAB>v1 v2 ...'")
            }
            let values = line[line.index(after: tab)...].split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," })
            var vector: [Float] = []
            vector.reserveCapacity(values.count)
            for v in values {
                guard let f = Float(v) else { throw ModelError(.badData, "\(path):\(index + 1): '\(v)' is not a number") }
                vector.append(f)
            }
            if let first = out.first, first.vector.count != vector.count {
                throw ModelError(.badData, "\(path):\(index + 1): \(vector.count) values, the first line has \(first.vector.count)")
            }
            out.append((String(line[..<tab]), vector))
        }
        guard !out.isEmpty else { throw ModelError(.badData, "\(path): no vectors") }
        return out
    }

    /// A NumPy .npy float32 (little-endian, C order) 2-D array [N, D] and its ids file (one id a line).
    public static func parseNPY(path: String, idsPath: String) throws -> [(id: String, vector: [Float])] {
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelError(.badData, "\(path): cannot read") }
        let bytes = [UInt8](data)
        guard bytes.count >= 10, bytes.prefix(6).elementsEqual([0x93] + Array("NUMPY".utf8)) else {
            throw ModelError(.badData, "\(path): not a .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        } else {
            guard bytes.count >= 12 else { throw ModelError(.badData, "\(path): truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24; headerStart = 12
        }
        guard headerStart + headerLength <= bytes.count else { throw ModelError(.badData, "\(path): truncated header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        guard header.contains("'descr': '<f4'") else {
            throw ModelError(.unsupported, "\(path): only little-endian float32 arrays are read ('descr': '<f4'); header: \(header); convert with arr.astype('<f4')")
        }
        guard header.contains("'fortran_order': False") else {
            throw ModelError(.unsupported, "\(path): Fortran-ordered arrays are not read; save with np.ascontiguousarray")
        }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw ModelError(.badData, "\(path): no shape in the header")
        }
        let dims = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard dims.count == 2, dims[0] > 0, dims[1] > 0 else {
            throw ModelError(.badData, "\(path): expected a 2-D array [N, D], the shape is \(dims)")
        }
        let (n, d) = (dims[0], dims[1])
        let start = headerStart + headerLength
        guard bytes.count - start == n * d * 4 else {
            throw ModelError(.badData, "\(path): \(bytes.count - start) data bytes, shape [\(n), \(d)] needs \(n * d * 4)")
        }
        guard let idsText = try? String(contentsOfFile: idsPath, encoding: .utf8) else {
            throw ModelError(.badData, "\(idsPath): cannot read the ids file (one item id a line, in the array's row order)")
        }
        let ids = idsText.split(whereSeparator: \.isNewline).map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard ids.count == n else { throw ModelError(.badData, "\(idsPath): \(ids.count) ids for \(n) rows in \(path)") }
        return ids.enumerated().map { i, id in
            (id, (0..<d).map { j in
                let o = start + 4 * (i * d + j)
                return Float(bitPattern: UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24)
            })
        }
    }
}
