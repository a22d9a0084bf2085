import Foundation
import XCTest
@testable import StreamRecText

/// Parity with sentence-transformers on /work/shared/testdata/minilm_golden.json: 30 texts with
/// the reference token ids and embeddings (all-MiniLM-L6-v2, mean pooling, L2-normalised).
final class GoldenParityTests: XCTestCase {
    /// The repository root (this file is Tests/StreamRecTextTests/GoldenParityTests.swift).
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let goldenURL = packageRoot.appendingPathComponent("../shared/testdata/minilm_golden.json").standardized

    struct Golden: Decodable {
        struct Case: Decodable {
            let text: String
            let input_ids: [Int32]
            let embedding: [Float]
        }
        let cases: [Case]
    }

    static func modelDirectoryOrSkip() throws -> URL {
        let directory = SentenceEncoder.defaultDirectory(root: packageRoot)
        for file in ["model.safetensors", "vocab.txt", "config.json"] {
            guard FileManager.default.fileExists(atPath: directory.appendingPathComponent(file).path) else {
                throw XCTSkip("all-MiniLM-L6-v2 is not in \(directory.path) (no \(file)); run `make setup` "
                    + "(or ops/fetch-minilm.sh), or set STREAMREC_MINILM_DIR to the model folder")
            }
        }
        return directory
    }

    static func goldenOrSkip() throws -> Golden {
        guard let data = FileManager.default.contents(atPath: goldenURL.path) else {
            throw XCTSkip("no golden file at \(goldenURL.path) (shared/testdata beside the repository)")
        }
        return try JSONDecoder().decode(Golden.self, from: data)
    }

    // One encoder for the whole class: loading 90 MB per test is wasted time.
    nonisolated(unsafe) static var shared: SentenceEncoder?
    static func encoder() throws -> SentenceEncoder {
        if let shared { return shared }
        let encoder = try SentenceEncoder(directory: modelDirectoryOrSkip(), threads: 2)
        shared = encoder
        return encoder
    }

    func testTokenIDsMatchTheReferenceForAllCases() throws {
        let golden = try Self.goldenOrSkip()
        let directory = try Self.modelDirectoryOrSkip()
        var options = WordPieceTokenizer.Options()
        options.maxLength = 256
        let tokenizer = try WordPieceTokenizer(vocabularyURL: directory.appendingPathComponent("vocab.txt"), options: options)
        XCTAssertEqual(golden.cases.count, 30)
        var mismatches = 0
        for item in golden.cases {
            let ids = tokenizer.encode(item.text)
            if ids != item.input_ids {
                mismatches += 1
                XCTFail("ids differ for \(item.text.debugDescription):\n ours \(ids)\n reference \(item.input_ids)\n"
                    + " our tokens \(tokenizer.tokenize(item.text).prefix(40))")
            }
        }
        XCTAssertEqual(mismatches, 0)
    }

    func testEmbeddingsMatchTheReferenceForAllCases() throws {
        let golden = try Self.goldenOrSkip()
        let encoder = try Self.encoder()
        XCTAssertEqual(encoder.dimension, 384)
        // A small batch size so several batches and both workers are exercised.
        let embeddings = encoder.encode(golden.cases.map(\.text), batchSize: 8)
        var minimumCosine: Double = 1, maximumDifference: Float = 0
        for (item, embedding) in zip(golden.cases, embeddings) {
            XCTAssertEqual(embedding.count, item.embedding.count)
            let cosine = Self.cosine(embedding, item.embedding)
            let difference = zip(embedding, item.embedding).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertGreaterThanOrEqual(cosine, 0.9999, "cosine for \(item.text.debugDescription)")
            XCTAssertLessThanOrEqual(difference, 1e-4, "max |diff| for \(item.text.debugDescription)")
            minimumCosine = min(minimumCosine, cosine)
            maximumDifference = max(maximumDifference, difference)
        }
        print(String(format: "MiniLM golden parity over %d cases: min cosine %.9f, max |diff| %.3g",
                     golden.cases.count, minimumCosine, Double(maximumDifference)))
    }

    func testBatchingDoesNotChangeEmbeddings() throws {
        let golden = try Self.goldenOrSkip()
        let encoder = try Self.encoder()
        let texts = golden.cases.map(\.text)
        let together = encoder.encode(texts, batchSize: 64)
        let alone = texts.map { encoder.encode([$0], batchSize: 1)[0] }
        let single = try SentenceEncoder(directory: Self.modelDirectoryOrSkip(), threads: 1).encode(texts, batchSize: 3)
        for k in texts.indices {
            XCTAssertLessThanOrEqual(zip(together[k], alone[k]).map { abs($0 - $1) }.max()!, 1e-5)
            XCTAssertLessThanOrEqual(zip(together[k], single[k]).map { abs($0 - $1) }.max()!, 1e-5)
            let norm = together[k].reduce(0) { $0 + $1 * $1 }.squareRoot()
            XCTAssertEqual(norm, 1, accuracy: 1e-5)
        }
        XCTAssertEqual(encoder.encode([]), [])
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot: Double = 0, aa: Double = 0, bb: Double = 0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); aa += Double(x) * Double(x); bb += Double(y) * Double(y) }
        return dot / max((aa * bb).squareRoot(), 1e-30)
    }
}
