// Interaction data loaders and the leave-one-out split.
//
// Formats, chosen by path:
//   directory, or a .txt file   the shared-data format: sequences.txt holds `user item item ...`
//                               per line, oldest first; an optional items.tsv beside it holds a
//                               header, then `item_id<TAB>title<TAB>extra`
//   .dat                        MovieLens ratings.dat: `UserID::MovieID::Rating::Timestamp`
//   .csv                        `user,item,timestamp`, with an optional header line
// MovieLens and CSV rows are grouped per user and sorted by timestamp; rows with equal timestamps
// keep their file order. A bad row stops the load with "file:line: reason".
import Foundation

public struct SequenceDataset: Sendable {
    /// One entry per user, items oldest first.
    public var sequences: [(user: String, items: [String])]
    /// Item id -> title, when the dataset has an items.tsv.
    public var itemTitles: [String: String]?
    /// The path the data was loaded from.
    public var source: String
    /// Event times (the file's unit), index-aligned with `sequences`, for formats that have them
    /// (ratings.dat, CSV); nil for the shared-data sequences format.
    public var timestamps: [[Int64]]?

    public init(sequences: [(user: String, items: [String])], itemTitles: [String: String]? = nil, source: String,
                timestamps: [[Int64]]? = nil) {
        self.sequences = sequences
        self.itemTitles = itemTitles
        self.source = source
        self.timestamps = timestamps
    }

    public var interactionCount: Int { sequences.reduce(0) { $0 + $1.items.count } }

    /// Loads any supported format, chosen by the path (see the top of this file).
    public static func load(path: String) throws -> SequenceDataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError(.badData, "\(path): no such file or directory")
        }
        let url = URL(fileURLWithPath: path)
        if isDirectory.boolValue {
            let sequencesFile = url.appendingPathComponent("sequences.txt").path
            if FileManager.default.fileExists(atPath: sequencesFile) {
                var dataset = try loadSequences(path: sequencesFile)
                dataset.itemTitles = try loadTitlesIfPresent(directory: url)
                dataset.source = path
                return dataset
            }
            let ratingsFile = url.appendingPathComponent("ratings.dat").path
            if FileManager.default.fileExists(atPath: ratingsFile) {
                return try loadMovieLens(path: ratingsFile)
            }
            throw ModelError(.badData, "\(path): the directory has neither sequences.txt nor ratings.dat; point --data at one of those or at a .csv")
        }
        switch url.pathExtension.lowercased() {
        case "dat":
            return try loadMovieLens(path: path)
        case "csv":
            return try loadCSV(path: path)
        case "txt":
            var dataset = try loadSequences(path: path)
            // A sequences.txt given directly still gets the titles beside it.
            if url.lastPathComponent == "sequences.txt" {
                dataset.itemTitles = try loadTitlesIfPresent(directory: url.deletingLastPathComponent())
            }
            return dataset
        default:
            throw ModelError(.unsupported, "\(path): unknown data format '.\(url.pathExtension)'; use a directory with sequences.txt, a .txt sequences file, a MovieLens .dat, or a user,item,timestamp .csv")
        }
    }

    /// `user item item ...` per line (spaces or tabs), oldest first. Blank lines are skipped.
    public static func loadSequences(path: String) throws -> SequenceDataset {
        let text = try TextFile(path: path)
        var sequences: [(user: String, items: [String])] = []
        try text.forEachLine { number, line in
            let fields = TextFile.fields(of: line, separatedBy: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
            if fields.isEmpty { return }
            guard fields.count >= 2 else {
                throw ModelError(.badData, "\(path):\(number): too few fields: expected 'user item [item ...]', got only the user '\(text.string(fields[0]))'")
            }
            sequences.append((user: text.string(fields[0]), items: fields.dropFirst().map(text.string)))
        }
        guard !sequences.isEmpty else { throw ModelError(.badData, "\(path): no sequences in the file") }
        return SequenceDataset(sequences: sequences, source: path)
    }

    /// items.tsv: a header line, then `item_id<TAB>title[<TAB>extra]`.
    public static func loadItemTitles(path: String) throws -> [String: String] {
        let text = try TextFile(path: path)
        var titles: [String: String] = [:]
        try text.forEachLine { number, line in
            guard number > 1, !line.isEmpty else { return }
            let fields = TextFile.fields(of: line, separatedBy: { $0 == UInt8(ascii: "\t") }, keepEmpty: true)
            guard fields.count >= 2, !fields[0].isEmpty else {
                throw ModelError(.badData, "\(path):\(number): too few fields: expected 'item_id<TAB>title[<TAB>extra]'")
            }
            titles[text.string(fields[0])] = text.string(fields[1])
        }
        return titles
    }

    private static func loadTitlesIfPresent(directory: URL) throws -> [String: String]? {
        let itemsFile = directory.appendingPathComponent("items.tsv").path
        return FileManager.default.fileExists(atPath: itemsFile) ? try loadItemTitles(path: itemsFile) : nil
    }

    /// MovieLens `UserID::MovieID::Rating::Timestamp` (the rating is not used: any rating is an
    /// interaction).
    public static func loadMovieLens(path: String) throws -> SequenceDataset {
        let text = try TextFile(path: path)
        var rows = TimedRows()
        try text.forEachLine { number, line in
            if line.isEmpty { return }
            let fields = TextFile.doubleColonFields(of: line)
            guard fields.count == 4 else {
                throw ModelError(.badData, "\(path):\(number): \(fields.count < 4 ? "too few" : "too many") fields: expected UserID::MovieID::Rating::Timestamp, got \(fields.count)")
            }
            guard !fields[0].isEmpty, !fields[1].isEmpty else {
                throw ModelError(.badData, "\(path):\(number): empty \(fields[0].isEmpty ? "UserID" : "MovieID")")
            }
            guard let timestamp = TextFile.int64(fields[3]) else {
                throw ModelError(.badData, "\(path):\(number): timestamp '\(text.string(fields[3]))' is not an integer")
            }
            rows.append(user: text.string(fields[0]), item: text.string(fields[1]), timestamp: timestamp)
        }
        guard !rows.isEmpty else { throw ModelError(.badData, "\(path): no ratings in the file") }
        let timed = rows.timedSequences()
        return SequenceDataset(sequences: timed.map { ($0.user, $0.items) }, source: path, timestamps: timed.map(\.timestamps))
    }

    /// `user,item,timestamp` (extra columns ignored). The first line is a header when its
    /// timestamp column is not an integer.
    public static func loadCSV(path: String) throws -> SequenceDataset {
        let text = try TextFile(path: path)
        var rows = TimedRows()
        var sawFirstLine = false
        try text.forEachLine { number, line in
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { return }
            let isFirstLine = !sawFirstLine
            sawFirstLine = true
            let fields = TextFile.fields(of: line, separatedBy: { $0 == UInt8(ascii: ",") }, keepEmpty: true).map(TextFile.trimmed)
            guard fields.count >= 3 else {
                throw ModelError(.badData, "\(path):\(number): too few fields: expected user,item,timestamp, got \(fields.count)")
            }
            guard let timestamp = TextFile.int64(fields[2]) else {
                if isFirstLine { return }
                throw ModelError(.badData, "\(path):\(number): timestamp '\(text.string(fields[2]))' is not an integer")
            }
            guard !fields[0].isEmpty, !fields[1].isEmpty else {
                throw ModelError(.badData, "\(path):\(number): empty \(fields[0].isEmpty ? "user" : "item")")
            }
            rows.append(user: text.string(fields[0]), item: text.string(fields[1]), timestamp: timestamp)
        }
        guard !rows.isEmpty else { throw ModelError(.badData, "\(path): no interactions in the file") }
        let timed = rows.timedSequences()
        return SequenceDataset(sequences: timed.map { ($0.user, $0.items) }, source: path, timestamps: timed.map(\.timestamps))
    }

    /// The standard next-item protocol: per user, the last item is the test target, the one before
    /// it the validation target, the rest training. Users with fewer than 3 items keep them all
    /// in training and have no targets.
    public func leaveOneOut() -> LeaveOneOutSplit {
        var split = LeaveOneOutSplit()
        for (user, items) in sequences {
            split.users.append(user)
            if items.count < 3 {
                split.train.append(items)
                split.validation.append(nil)
                split.test.append(nil)
            } else {
                split.train.append(Array(items.dropLast(2)))
                split.validation.append(items[items.count - 2])
                split.test.append(items[items.count - 1])
            }
        }
        return split
    }
}

/// Per-user arrays, index-aligned with `users`.
public struct LeaveOneOutSplit: Sendable, Equatable {
    public var users: [String] = []
    public var train: [[String]] = []
    public var validation: [String?] = []
    public var test: [String?] = []

    public init() {}

    /// History = the training items, target = the validation item (to tune on).
    public var validationCases: [(history: [String], target: String)] {
        train.indices.compactMap { u in validation[u].map { (history: train[u], target: $0) } }
    }

    /// History = the training items plus the validation item, target = the test item.
    public var testCases: [(history: [String], target: String)] {
        train.indices.compactMap { u in
            guard let target = test[u], let validationItem = validation[u] else { return nil }
            return (history: train[u] + [validationItem], target: target)
        }
    }
}

/// Timestamped rows grouped by user in first-appearance order; sorting each user's rows by
/// (timestamp, file order) keeps equal timestamps in the order the file lists them.
private struct TimedRows {
    private var userIndex: [String: Int] = [:]
    private var users: [String] = []
    private var rowsByUser: [[(timestamp: Int64, order: Int, item: String)]] = []
    private var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func append(user: String, item: String, timestamp: Int64) {
        let index: Int
        if let known = userIndex[user] {
            index = known
        } else {
            index = users.count
            userIndex[user] = index
            users.append(user)
            rowsByUser.append([])
        }
        rowsByUser[index].append((timestamp, count, item))
        count += 1
    }

    func timedSequences() -> [(user: String, items: [String], timestamps: [Int64])] {
        zip(users, rowsByUser).map { user, rows in
            let sorted = rows.sorted { ($0.timestamp, $0.order) < ($1.timestamp, $1.order) }
            return (user: user, items: sorted.map(\.item), timestamps: sorted.map(\.timestamp))
        }
    }
}

/// A text file as bytes, split into lines and fields without building a String per line:
/// MovieLens-sized files (a million rows) load in a fraction of a second.
private struct TextFile {
    let path: String
    let bytes: [UInt8]
    /// Old MovieLens files are Latin-1; decode those byte for byte instead of refusing them.
    let isUTF8: Bool

    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError(.badData, "\(path): cannot read the file (missing or unreadable)")
        }
        self.path = path
        bytes = [UInt8](data)
        isUTF8 = String(validating: bytes, as: UTF8.self) != nil
    }

    /// Calls `body` with each line's 1-based number and its bytes, without the line ending
    /// (\n or \r\n).
    func forEachLine(_ body: (Int, ArraySlice<UInt8>) throws -> Void) throws {
        var start = bytes.startIndex
        var number = 0
        while start < bytes.endIndex {
            number += 1
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
            var line = bytes[start..<end]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            try body(number, line)
            start = end + 1
        }
    }

    func string(_ field: ArraySlice<UInt8>) -> String {
        isUTF8 ? String(decoding: field, as: UTF8.self) : String(decoding: field.map { UInt32($0) }, as: UTF32.self)
    }

    /// Splits on single separator bytes; runs of separators count as one unless `keepEmpty`.
    static func fields(of line: ArraySlice<UInt8>, separatedBy isSeparator: (UInt8) -> Bool,
                       keepEmpty: Bool = false) -> [ArraySlice<UInt8>] {
        line.split(omittingEmptySubsequences: !keepEmpty, whereSeparator: isSeparator)
    }

    /// Splits on "::" (MovieLens).
    static func doubleColonFields(of line: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var fields: [ArraySlice<UInt8>] = []
        var fieldStart = line.startIndex
        var i = line.startIndex
        while i < line.endIndex {
            if line[i] == UInt8(ascii: ":"), i + 1 < line.endIndex, line[i + 1] == UInt8(ascii: ":") {
                fields.append(line[fieldStart..<i])
                i += 2
                fieldStart = i
            } else {
                i += 1
            }
        }
        fields.append(line[fieldStart..<line.endIndex])
        return fields
    }

    static func trimmed(_ field: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        let isSpace = { (b: UInt8) in b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }
        guard let first = field.firstIndex(where: { !isSpace($0) }) else { return field[field.endIndex...] }
        let last = field.lastIndex(where: { !isSpace($0) })!
        var result = field[first...last]
        // Plain CSV quoting of a whole field ("u1"); embedded quotes and commas are not supported.
        if result.count >= 2, result.first == UInt8(ascii: "\""), result.last == UInt8(ascii: "\"") {
            result = result.dropFirst().dropLast()
        }
        return result
    }

    /// A decimal integer with an optional sign; nil on anything else or on overflow.
    static func int64(_ field: ArraySlice<UInt8>) -> Int64? {
        var digits = field[...]
        var negative = false
        if let sign = digits.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
            negative = sign == UInt8(ascii: "-")
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty else { return nil }
        var value: Int64 = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let digit = Int64(byte - UInt8(ascii: "0"))
            let (shifted, overflowMultiply) = value.multipliedReportingOverflow(by: 10)
            let (next, overflowAdd) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            if overflowMultiply || overflowAdd { return nil }
            value = next
        }
        return value
    }
}
