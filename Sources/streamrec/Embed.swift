import ArgumentParser
import Foundation
import StreamRecModels
import StreamRecText

struct Embed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Embed item texts into an embedding cache (or import external vectors into one).",
        discussion: """
            Text per item: title plus the extra column, except when the extra is an identifier such as an ASIN \
            (then the title alone, or the extra when the title is empty). An existing --out cache made by the same \
            model is updated: only new items and items whose text changed are embedded. See docs/models.md, "Embedding cache".
            """)

    @OptionGroup var common: CommonOptions
    @Option(help: "items.tsv: a header line, then item_id<TAB>title<TAB>extra.") var items: String?
    @Option(help: "Encoder directory (default: models/all-MiniLM-L6-v2, or STREAMREC_MINILM_DIR).") var model: String?
    @Option(help: "Cache file to create or update.") var out: String
    @Option(help: "Texts per encoder forward pass.") var batch: Int = 64
    @Option(help: "Encoder threads.") var threads: Int = 2
    @Option(name: .customLong("import"), help: "Import vectors instead of embedding: FILE.tsv (item_id<TAB>v1 v2 ...) or FILE.npy (float32 [N, D], with --ids).")
    var importFile: String?
    @Option(help: "With --import FILE.npy: the ids of its rows, one per line.") var ids: String?
    @Option(help: "With --import: the model id recorded in the cache (default import:<file name>).") var modelID: String?

    func validate() throws {
        guard (items == nil) != (importFile == nil) else { throw ValidationError("pass either --items items.tsv or --import FILE") }
        guard batch >= 1, threads >= 1 else { throw ValidationError("--batch and --threads must be at least 1") }
        if let importFile, importFile.hasSuffix(".npy"), ids == nil { throw ValidationError("--import FILE.npy needs --ids FILE (one id per row)") }
    }

    func run() async throws {
        common.startKernels(common.makeLogger("streamrec.embed"))
        try await userFacing {
            if let importFile { try importVectors(importFile) } else { try embedItems(items!) }
        }
    }

    private func existing(modelID: String, dimension: Int?) -> EmbeddingCache? {
        guard FileManager.default.fileExists(atPath: out) else { return nil }
        do {
            let cache = try EmbeddingCache.load(path: out)
            if cache.modelID == modelID, dimension == nil || cache.dimension == dimension { return cache }
            FileHandle.standardError.write(Data("warning: \(out) was made by \(cache.modelID), not \(modelID); starting a new cache\n".utf8))
        } catch {
            FileHandle.standardError.write(Data("warning: \(out) is not a usable cache (\(error)); starting a new one\n".utf8))
        }
        return nil
    }

    private func embedItems(_ path: String) throws {
        let start = Date()
        let directory = model.map { URL(fileURLWithPath: $0) }
            ?? SentenceEncoder.defaultDirectory(root: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        let id = try EmbeddingCache.modelID(directory: directory)
        let texts = try ItemText.load(itemsTSV: path)
        let cache = existing(modelID: id, dimension: nil)
        let todo = texts.filter { cache?.needsEmbedding(id: $0.id, text: $0.text) ?? true }
        print("\(texts.count) items in \(path); \(todo.count) to embed, \(texts.count - todo.count) unchanged in the cache")
        if let cache, todo.isEmpty {
            // Nothing to encode: do not pay for loading the encoder.
            print(String(format: "nothing to embed; cache: %d items x %d (%@) -> %@ unchanged; total %.2f s", cache.count, cache.dimension,
                         cache.modelID, out, Date().timeIntervalSince(start)))
            return
        }
        let encoder = try SentenceEncoder(directory: directory, threads: threads)
        let target = cache ?? EmbeddingCache(modelID: id, dimension: encoder.dimension)
        guard target.dimension == encoder.dimension else {
            throw ModelError(.badData, "\(out): \(target.dimension)-dimensional vectors, the encoder gives \(encoder.dimension); use another --out")
        }
        let encodeStart = Date()
        let isTerminal = isatty(STDERR_FILENO) != 0
        var lastBar = Date.distantPast
        // Chunks large enough for the encoder's length sorting and two workers, small enough for a live bar.
        try target.update(texts, chunk: max(batch * 8, 256), embed: { encoder.encode($0, batchSize: batch) }) { done, total in
            guard isTerminal || Date().timeIntervalSince(lastBar) > 10 || done == total else { return }
            lastBar = Date()
            let elapsed = Date().timeIntervalSince(encodeStart), rate = Double(done) / max(elapsed, 1e-9)
            let filled = 30 * done / max(1, total)
            let line = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled) + "]"
                + String(format: " %d/%d  %.0f items/s  ETA %@", done, total, rate, formatDuration(Double(total - done) / rate))
            FileHandle.standardError.write(Data((isTerminal ? "\r\u{1B}[K" + line : line + "\n").utf8))
        }
        if isTerminal && !todo.isEmpty { FileHandle.standardError.write(Data("\n".utf8)) }
        let encodeSeconds = Date().timeIntervalSince(encodeStart)
        try target.save(to: out)
        print(String(format: "embedded %d items in %.2f s (%.0f items/s, %d threads, batch %d); cache: %d items x %d (%@) -> %@; total %.2f s",
                     todo.count, encodeSeconds, Double(todo.count) / max(encodeSeconds, 1e-9), threads, batch, target.count, target.dimension,
                     target.modelID, out, Date().timeIntervalSince(start)))
    }

    private func importVectors(_ path: String) throws {
        let rows = path.hasSuffix(".npy") ? try EmbeddingCache.parseNPY(path: path, idsPath: ids!) : try EmbeddingCache.parseTSV(path: path)
        let id = modelID ?? "import:" + URL(fileURLWithPath: path).lastPathComponent
        let dimension = rows[0].vector.count
        let cache = existing(modelID: id, dimension: dimension) ?? EmbeddingCache(modelID: id, dimension: dimension)
        // Imported text is unknown (hash 0): a later `embed --items` with another model starts over anyway.
        for row in rows { try cache.add(id: row.id, vector: row.vector, textHash: 0) }
        try cache.save(to: out)
        print("imported \(rows.count) vectors of \(dimension) from \(path) (model id \(id)); cache: \(cache.count) items -> \(out)")
    }
}
