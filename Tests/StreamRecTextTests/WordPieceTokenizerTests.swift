import Foundation
import XCTest
@testable import StreamRecText

final class WordPieceTokenizerTests: XCTestCase {
    static let vocabulary = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
        "the", "cafe", "creme", "brulee", "uber", "un", "##aff", "##able", "hello", "world",
        "!", ",", ".", "'", "-", "+", "$", "—", "[", "]", "mask", "don", "t", "東", "京", "タ", "##ワ",
        "a", "##a", "b", "e", "é", "##\u{301}", "σας", "ς", "σ", "12", "##3", "x",
    ]

    func tokenizer(_ configure: (inout WordPieceTokenizer.Options) -> Void = { _ in }) throws -> WordPieceTokenizer {
        var options = WordPieceTokenizer.Options()
        configure(&options)
        return try WordPieceTokenizer(vocabulary: Self.vocabulary, options: options)
    }

    func testLowercasesAndStripsAccents() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.tokenize("Crème BRÛLÉE"), ["creme", "brulee"])
        XCTAssertEqual(t.tokenize("Café ÜBER"), ["cafe", "uber"])
        // Already decomposed input gives the same answer.
        XCTAssertEqual(t.tokenize("Cafe\u{301}"), ["cafe"])
        // Final sigma: ΣΑΣ lower-cases to σας, as Python's str.lower does.
        XCTAssertEqual(t.basicTokenize("ΣΑΣ"), ["σας"])
    }

    func testCasedTokenizerComparesScalarsNotCanonicalEquivalence() throws {
        let t = try tokenizer { $0.lowercase = false }
        XCTAssertEqual(t.tokenize("é"), ["é"])                  // precomposed U+00E9: in the vocabulary
        XCTAssertEqual(t.tokenize("e\u{301}"), ["e", "##\u{301}"])  // decomposed: not the same entry
    }

    func testCJKIdeographsAreWordsKanaIsNot() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.basicTokenize("東京タワ"), ["東", "京", "タワ"])
        XCTAssertEqual(t.tokenize("東京タワ"), ["東", "京", "タ", "##ワ"])
        XCTAssertEqual(t.basicTokenize("x東x"), ["x", "東", "x"])
        let plain = try tokenizer { $0.tokenizeChineseChars = false }
        XCTAssertEqual(plain.basicTokenize("東京"), ["東京"])
    }

    func testPunctuationIsSplitOff() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.tokenize("hello, world!"), ["hello", ",", "world", "!"])
        XCTAssertEqual(t.tokenize("don't"), ["don", "'", "t"])
        XCTAssertEqual(t.tokenize("a+b"), ["a", "+", "b"])          // ASCII symbol counts as punctuation
        XCTAssertEqual(t.tokenize("$12.3"), ["$", "12", ".", "[UNK]"])  // "3" alone is not in the vocabulary
        XCTAssertEqual(t.tokenize("123"), ["12", "##3"])
        XCTAssertEqual(t.tokenize("hello—world"), ["hello", "—", "world"])  // U+2014 is Pd
        XCTAssertEqual(t.basicTokenize("a¿b«c»"), ["a", "¿", "b", "«", "c", "»"])
        XCTAssertEqual(t.basicTokenize("a^b`c~"), ["a", "^", "b", "`", "c", "~"])
    }

    func testCleaningAndWhitespace() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.basicTokenize("hel\u{0}lo\u{FFFD} wor\u{200B}ld\u{7}"), ["hello", "world"])
        XCTAssertEqual(t.basicTokenize("\thello\n\rworld\u{3000}the\u{A0}cafe  "), ["hello", "world", "the", "cafe"])
        XCTAssertEqual(t.encode(""), [t.classID, t.separatorID])
        XCTAssertEqual(t.encode(" \n "), [t.classID, t.separatorID])
    }

    func testWordPieceAndUnknown() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.tokenize("unaffable"), ["un", "##aff", "##able"])
        XCTAssertEqual(t.tokenize("unaffablez"), ["[UNK]"])   // an unmatched rest makes the whole word unknown
        XCTAssertEqual(t.tokenize("zzz the 😀"), ["[UNK]", "the", "[UNK]"])
    }

    func testLongWordsBecomeUnknown() throws {
        let t = try tokenizer()
        let hundred = String(repeating: "a", count: 100)
        XCTAssertEqual(t.tokenize(hundred), ["a"] + Array(repeating: "##a", count: 99))
        XCTAssertEqual(t.tokenize(hundred + "a"), ["[UNK]"])
        let short = try tokenizer { $0.maxInputCharsPerWord = 3 }
        XCTAssertEqual(short.tokenize("aaa aaaa"), ["a", "##a", "##a", "[UNK]"])
    }

    func testSpecialTokensAddedAndKeptWholeAndTruncation() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.encode("the"), [2, 5, 3])
        XCTAssertEqual(t.tokenize("hello [MASK] world[SEP]"), ["hello", "[MASK]", "world", "[SEP]"])
        XCTAssertEqual(t.tokenize("[mask]"), ["[", "mask", "]"])  // only the exact spelling is special

        let short = try tokenizer { $0.maxLength = 5 }
        XCTAssertEqual(short.encode("the the the the the"), [2, 5, 5, 5, 3])
        XCTAssertEqual(short.encode("the the"), [2, 5, 5, 3])
        XCTAssertEqual(t.encode(String(repeating: "the ", count: 400)).count, 256)
    }

    func testVocabularyFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wordpiece-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("vocab.txt")
        try Data(Self.vocabulary.joined(separator: "\r\n").appending("\r\n").utf8).write(to: url)
        let t = try WordPieceTokenizer(vocabularyURL: url)
        XCTAssertEqual(t.vocabularySize, Self.vocabulary.count)
        XCTAssertEqual(t.tokenize("the cafe"), ["the", "cafe"])

        XCTAssertThrowsError(try WordPieceTokenizer(vocabularyURL: directory.appendingPathComponent("absent.txt"))) {
            let error = $0 as? TextModelError
            XCTAssertEqual(error?.code, .missingFile)
            XCTAssertTrue(error?.message.contains("make setup") ?? false)
        }
        try Data("the\ncafe\n".utf8).write(to: url)
        XCTAssertThrowsError(try WordPieceTokenizer(vocabularyURL: url)) {
            XCTAssertEqual(($0 as? TextModelError)?.code, .badFile)
            XCTAssertTrue("\($0)".contains("[UNK]"), "\($0)")
        }
    }
}
