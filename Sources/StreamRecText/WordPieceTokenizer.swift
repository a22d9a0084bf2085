import Foundation

/// BERT's uncased tokenizer: the basic tokenizer, then greedy longest-match-first WordPiece.
///
/// Rules, in order (the same as BERT's reference tokenizer and Hugging Face's BertNormalizer +
/// BertPreTokenizer + WordPiece, which produced the golden ids in the tests):
/// 1. Special tokens written in the raw text (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`) are
///    kept whole, as the reference tokenizers do with their added tokens.
/// 2. Clean: drop U+0000, U+FFFD and control characters (general category C*, except tab, LF,
///    CR); every whitespace character (White_Space) becomes a separator.
/// 3. CJK ideographs (the CJK Unified Ideographs blocks and extensions A-E, compatibility
///    ideographs) become words of their own. Hiragana, Katakana and Hangul are not split.
/// 4. Lower-case (full Unicode mapping, final sigma included), then NFD and drop nonspacing
///    marks (Mn), which strips accents: "Crème" -> "creme".
/// 5. Split on whitespace, then split off every punctuation character as a word of its own:
///    ASCII 33-47, 58-64, 91-96, 123-126, and every Unicode P* category.
/// 6. WordPiece each word: the longest vocabulary entry that prefixes the rest of the word, with
///    "##" before every piece but the first; a word with an unmatched remainder, or longer than
///    100 scalars, becomes a single `[UNK]`.
/// 7. `[CLS]` + pieces + `[SEP]`, pieces cut so the whole is at most `maxLength` (256, the
///    sentence-transformers setting for all-MiniLM-L6-v2).
///
/// Strings are compared as Unicode scalars, never as Swift `String`s: Swift's String equality is
/// canonical equivalence, which would match vocabulary entries the reference does not.
public struct WordPieceTokenizer: Sendable {
    public struct Options: Sendable, Equatable {
        /// Lower-case the text (uncased models).
        public var lowercase: Bool = true
        /// Strip accents (NFD, drop Mn). `nil` follows `lowercase`, as BERT does.
        public var stripAccents: Bool? = nil
        /// Put spaces around CJK ideographs.
        public var tokenizeChineseChars: Bool = true
        /// Tokens per sequence including `[CLS]` and `[SEP]`.
        public var maxLength: Int = 256
        /// Longer words (in Unicode scalars) become `[UNK]`.
        public var maxInputCharsPerWord: Int = 100
        public var continuingSubwordPrefix: String = "##"
        public var unknownToken: String = "[UNK]"
        public var classToken: String = "[CLS]"
        public var separatorToken: String = "[SEP]"
        public var paddingToken: String = "[PAD]"
        public var maskToken: String = "[MASK]"
        /// Keep special tokens written in the text whole.
        public var recognizeSpecialTokens: Bool = true

        public init() {}
    }

    public let options: Options
    /// Vocabulary, by id.
    public let tokens: [String]
    public let unknownID: Int32
    public let classID: Int32
    public let separatorID: Int32
    public let paddingID: Int32

    /// UTF-8 bytes of a vocabulary entry -> id.
    private let ids: [[UInt8]: Int32]
    /// Longest vocabulary entry in Unicode scalars (bounds the WordPiece search).
    private let longestEntry: Int
    private let prefixBytes: [UInt8]
    private let specialTokens: [(scalars: [Unicode.Scalar], id: Int32)]

    /// Loads vocab.txt: one token per line, the line number (from 0) is its id.
    public init(vocabularyURL url: URL, options: Options = Options()) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TextModelError(.missingFile, "no vocabulary at \(url.path); run `make setup` "
                + "(ops/fetch-minilm.sh) or pass the model folder that holds vocab.txt")
        }
        var lines = data.split(separator: 0x0A, omittingEmptySubsequences: false).map { line -> String in
            var bytes = Array(line)
            if bytes.last == 0x0D { bytes.removeLast() }
            return String(decoding: bytes, as: UTF8.self)
        }
        if lines.last == "" { lines.removeLast() }
        do {
            try self.init(vocabulary: lines, options: options)
        } catch let error as TextModelError {
            throw TextModelError(error.code, "\(url.path): \(error.message)")
        }
    }

    public init(vocabulary: [String], options: Options = Options()) throws {
        guard !vocabulary.isEmpty else {
            throw TextModelError(.badFile, "the vocabulary is empty; fetch the model again (`make setup`)")
        }
        var ids: [[UInt8]: Int32] = [:]
        ids.reserveCapacity(vocabulary.count)
        var longest = 0
        for (index, token) in vocabulary.enumerated() {
            ids[Array(token.utf8)] = Int32(index)  // a repeated entry: the later line wins, as in BERT
            longest = max(longest, token.unicodeScalars.count)
        }
        func required(_ token: String) throws -> Int32 {
            guard let id = ids[Array(token.utf8)] else {
                throw TextModelError(.badFile, "the vocabulary has no \(token) token; is it a BERT vocab.txt?")
            }
            return id
        }
        self.options = options
        self.tokens = vocabulary
        self.ids = ids
        self.longestEntry = longest
        self.prefixBytes = Array(options.continuingSubwordPrefix.utf8)
        self.unknownID = try required(options.unknownToken)
        self.classID = try required(options.classToken)
        self.separatorID = try required(options.separatorToken)
        self.paddingID = try required(options.paddingToken)
        var specials: [(scalars: [Unicode.Scalar], id: Int32)] = []
        if options.recognizeSpecialTokens {
            for token in [options.paddingToken, options.unknownToken, options.classToken,
                          options.separatorToken, options.maskToken] {
                if let id = ids[Array(token.utf8)], !token.isEmpty {
                    specials.append((Array(token.unicodeScalars), id))
                }
            }
            specials.sort { $0.scalars.count > $1.scalars.count }  // longest match first
        }
        self.specialTokens = specials
    }

    public var vocabularySize: Int { tokens.count }

    /// Model input: `[CLS]` + WordPiece ids + `[SEP]`, at most `options.maxLength` ids.
    public func encode(_ text: String) -> [Int32] {
        var pieces = tokenIDs(text)
        let room = max(0, options.maxLength - 2)
        if pieces.count > room { pieces.removeSubrange(room...) }
        return [classID] + pieces + [separatorID]
    }

    /// WordPiece ids of the text, without `[CLS]`/`[SEP]` and without truncation.
    public func tokenIDs(_ text: String) -> [Int32] {
        var out: [Int32] = []
        for segment in splitSpecialTokens(Array(text.unicodeScalars)) {
            switch segment {
            case .special(let id):
                out.append(id)
            case .text(let scalars):
                for word in basicTokenize(scalars) { wordPiece(word, into: &out) }
            }
        }
        return out
    }

    /// WordPiece tokens of the text as strings (for inspection and tests).
    public func tokenize(_ text: String) -> [String] {
        tokenIDs(text).map { tokens[Int($0)] }
    }

    /// The words the basic tokenizer produces, before WordPiece.
    public func basicTokenize(_ text: String) -> [String] {
        basicTokenize(Array(text.unicodeScalars)).map { word in
            var view = String.UnicodeScalarView()
            view.append(contentsOf: word)
            return String(view)
        }
    }

    // MARK: - Special tokens

    private enum Segment {
        case text([Unicode.Scalar])
        case special(Int32)
    }

    private func splitSpecialTokens(_ scalars: [Unicode.Scalar]) -> [Segment] {
        guard !specialTokens.isEmpty, scalars.contains("[") else { return [.text(scalars)] }
        var segments: [Segment] = []
        var start = 0
        var i = 0
        outer: while i < scalars.count {
            if scalars[i] == "[" {
                for special in specialTokens where i + special.scalars.count <= scalars.count {
                    if scalars[i..<(i + special.scalars.count)].elementsEqual(special.scalars) {
                        if start < i { segments.append(.text(Array(scalars[start..<i]))) }
                        segments.append(.special(special.id))
                        i += special.scalars.count
                        start = i
                        continue outer
                    }
                }
            }
            i += 1
        }
        if start < scalars.count { segments.append(.text(Array(scalars[start...]))) }
        return segments
    }

    // MARK: - Basic tokenizer

    private func basicTokenize(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        // Clean, split on whitespace, isolate CJK ideographs.
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for scalar in scalars {
            let value = scalar.value
            if value == 0 || value == 0xFFFD || Self.isControl(scalar) { continue }
            if Self.isWhitespace(scalar) {
                if !current.isEmpty { words.append(current); current.removeAll(keepingCapacity: true) }
                continue
            }
            if options.tokenizeChineseChars && Self.isCJKIdeograph(value) {
                if !current.isEmpty { words.append(current); current.removeAll(keepingCapacity: true) }
                words.append([scalar])
                continue
            }
            current.append(scalar)
        }
        if !current.isEmpty { words.append(current) }

        // Normalise each word, then split off punctuation.
        var out: [[Unicode.Scalar]] = []
        out.reserveCapacity(words.count)
        for word in words {
            let normalized = normalize(word)
            var piece: [Unicode.Scalar] = []
            for scalar in normalized {
                if Self.isPunctuation(scalar) {
                    if !piece.isEmpty { out.append(piece); piece.removeAll(keepingCapacity: true) }
                    out.append([scalar])
                } else {
                    piece.append(scalar)
                }
            }
            if !piece.isEmpty { out.append(piece) }
        }
        return out
    }

    /// Lower-case and strip accents as the options say.
    private func normalize(_ word: [Unicode.Scalar]) -> [Unicode.Scalar] {
        let strip = options.stripAccents ?? options.lowercase
        if word.allSatisfy({ $0.isASCII }) {
            guard options.lowercase else { return word }
            return word.map { ($0.value >= 65 && $0.value <= 90) ? Unicode.Scalar($0.value + 32)! : $0 }
        }
        var result = word
        if options.lowercase {
            var lowered: [Unicode.Scalar] = []
            lowered.reserveCapacity(word.count)
            for (index, scalar) in word.enumerated() {
                if scalar.value == 0x03A3, Self.isFinalSigma(word, at: index) {
                    lowered.append("\u{03C2}")
                } else {
                    lowered.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
                }
            }
            result = lowered
        }
        if strip {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: result)
            let decomposed = String(view).decomposedStringWithCanonicalMapping
            result = decomposed.unicodeScalars.filter { $0.properties.generalCategory != .nonspacingMark }
        }
        return result
    }

    /// Unicode's Final_Sigma condition: a cased letter before (skipping case-ignorable ones) and
    /// none after.
    private static func isFinalSigma(_ word: [Unicode.Scalar], at index: Int) -> Bool {
        var before = false
        var i = index - 1
        while i >= 0 {
            let p = word[i].properties
            if p.isCaseIgnorable { i -= 1; continue }
            before = p.isCased
            break
        }
        guard before else { return false }
        i = index + 1
        while i < word.count {
            let p = word[i].properties
            if p.isCaseIgnorable { i += 1; continue }
            return !p.isCased
        }
        return true
    }

    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x20, 0x09, 0x0A, 0x0D: return true
        case 0..<0x80: return false
        default: return scalar.properties.isWhitespace
        }
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if value == 0x09 || value == 0x0A || value == 0x0D { return false }
        if value < 0x20 || value == 0x7F { return true }
        if value < 0x80 { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if (33...47).contains(value) || (58...64).contains(value) || (91...96).contains(value)
            || (123...126).contains(value) {
            return true
        }
        if value < 0x80 { return false }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    /// The CJK ideograph blocks BERT isolates ("Chinese characters"; Japanese kana and Korean
    /// Hangul are not in them).
    static func isCJKIdeograph(_ value: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(value) || (0x3400...0x4DBF).contains(value)
            || (0x20000...0x2A6DF).contains(value) || (0x2A700...0x2B73F).contains(value)
            || (0x2B740...0x2B81F).contains(value) || (0x2B820...0x2CEAF).contains(value)
            || (0xF900...0xFAFF).contains(value) || (0x2F800...0x2FA1F).contains(value)
    }

    // MARK: - WordPiece

    private func wordPiece(_ word: [Unicode.Scalar], into out: inout [Int32]) {
        if word.count > options.maxInputCharsPerWord {
            out.append(unknownID)
            return
        }
        // UTF-8 of the word and the byte offset of each scalar.
        var bytes: [UInt8] = []
        var offsets: [Int] = [0]
        for scalar in word {
            bytes.append(contentsOf: UTF8.encode(scalar)!)
            offsets.append(bytes.count)
        }
        let firstPiece = out.count
        var start = 0
        var key: [UInt8] = []
        while start < word.count {
            var end = min(word.count, start + longestEntry)
            var found: Int32?
            while start < end {
                key.removeAll(keepingCapacity: true)
                if start > 0 { key.append(contentsOf: prefixBytes) }
                key.append(contentsOf: bytes[offsets[start]..<offsets[end]])
                if let id = ids[key] { found = id; break }
                end -= 1
            }
            guard let id = found else {
                out.removeSubrange(firstPiece...)
                out.append(unknownID)
                return
            }
            out.append(id)
            start = end
        }
    }
}
