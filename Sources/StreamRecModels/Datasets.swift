// Interaction data loaders: the shared-data format (sequences.txt + items.tsv), MovieLens
// ratings.dat, and user,item,timestamp CSV. Bad rows are reported as file:line: reason.
import Foundation

public struct SequenceDataset: Sendable {
    /// One entry per user, items oldest first.
    public var sequences: [(user: String, items: [String])]
    /// item id -> title (and extra text), when the dataset has an items.tsv.
    public var itemText: [String: String]?
    public var source: String

    public init(sequences: [(user: String, items: [String])], itemText: [String: String]? = nil, source: String) {
        self.sequences = sequences
        self.itemText = itemText
        self.source = source
    }

    public var interactionCount: Int { sequences.reduce(0) { $0 + $1.items.count } }

    /// Picks the format from the path: a directory (sequences.txt inside), .dat (MovieLens),
    /// .csv (user,item,timestamp), anything else a sequences file.
    public static func load(path: String) throws -> SequenceDataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError(.badData, "\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            let dir = URL(fileURLWithPath: path)
            let sequencesFile = dir.appendingPathComponent("sequences.txt").path
            if FileManager.default.fileExists(atPath: sequencesFile) {
                var ds = try loadSequences(sequencesFile)
                let itemsFile = dir.appendingPathComponent("items.tsv").path
                if FileManager.default.fileExists(atPath: itemsFile) { ds.itemText = try loadItemText(itemsFile) }
                ds.source = path
                return ds
            }
            let ratings = dir.appendingPathComponent("ratings.dat").path
            if FileManager.default.fileExists(atPath: ratings) { return try loadMovieLens(ratings) }
            throw ModelError(.badData, "\(path): a dataset directory needs sequences.txt (or ratings.dat)")
        }
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "dat": return try loadMovieLens(path)
        case "csv": return try loadCSV(path)
        default: return try loadSequences(path)
        }
    }

    static func lines(_ path: String) throws -> [Substring] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError(.badData, "\(path): cannot read the file")
        }
        // ML-1M's original files are Latin-1; fall back to it rather than refusing them.
        let text = String(data: data, encoding: .utf8) ?? String(data: data, encoding: .isoLatin1) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
    }

    /// `user item item ...` per line, chronological.
    public static func loadSequences(_ path: String) throws -> SequenceDataset {
        var sequences: [(user: String, items: [String])] = []
        for (n, line) in try lines(path).enumerated() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.isEmpty { continue }
            guard fields.count >= 2 else {
                throw ModelError(.badData, "\(path):\(n + 1): expected 'user item [item ...]', got '\(line.prefix(80))'")
            }
            sequences.append((String(fields[0]), fields.dropFirst().map(String.init)))
        }
        guard !sequences.isEmpty else { throw ModelError(.badData, "\(path): no sequences in the file") }
        return SequenceDataset(sequences: sequences, source: path)
    }

    /// items.tsv: header, then item_id<TAB>title<TAB>extra.
    public static func loadItemText(_ path: String) throws -> [String: String] {
        var text: [String: String] = [:]
        for (n, line) in try lines(path).enumerated() where n > 0 && !line.isEmpty {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 2 else {
                throw ModelError(.badData, "\(path):\(n + 1): expected 'item_id<TAB>title[<TAB>extra]'")
            }
            text[String(fields[0])] = fields.dropFirst().joined(separator: " ").trimmingCharacters(in: .whitespaces)
        }
        return text
    }

    /// MovieLens `UserID::MovieID::Rating::Timestamp`; each user's items sorted by time (stable).
    public static func loadMovieLens(_ path: String) throws -> SequenceDataset {
        var rows: [(user: String, item: String, ts: Int64, order: Int)] = []
        for (n, line) in try lines(path).enumerated() where !line.isEmpty {
            let f = line.components(separatedBy: "::")
            guard f.count == 4 else {
                throw ModelError(.badData, "\(path):\(n + 1): expected UserID::MovieID::Rating::Timestamp, got \(f.count) fields")
            }
            guard let ts = Int64(f[3]) else {
                throw ModelError(.badData, "\(path):\(n + 1): timestamp '\(f[3])' is not an integer")
            }
            rows.append((f[0], f[1], ts, n))
        }
        return group(rows, source: path)
    }

    /// `user,item,timestamp` with an optional header line.
    public static func loadCSV(_ path: String) throws -> SequenceDataset {
        var rows: [(user: String, item: String, ts: Int64, order: Int)] = []
        for (n, line) in try lines(path).enumerated() where !line.isEmpty {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count >= 3 else {
                throw ModelError(.badData, "\(path):\(n + 1): expected user,item,timestamp, got \(f.count) fields")
            }
            guard let ts = Int64(f[2]) else {
                if n == 0 { continue }   // header
                throw ModelError(.badData, "\(path):\(n + 1): timestamp '\(f[2])' is not an integer")
            }
            rows.append((f[0], f[1], ts, n))
        }
        return group(rows, source: path)
    }

    private static func group(_ rows: [(user: String, item: String, ts: Int64, order: Int)], source: String) -> SequenceDataset {
        var byUser: [String: [(item: String, ts: Int64, order: Int)]] = [:]
        var userOrder: [String] = []
        for r in rows {
            if byUser[r.user] == nil { userOrder.append(r.user) }
            byUser[r.user, default: []].append((r.item, r.ts, r.order))
        }
        let sequences = userOrder.map { user in
            (user: user, items: byUser[user]!.sorted { ($0.ts, $0.order) < ($1.ts, $1.order) }.map(\.item))
        }
        return SequenceDataset(sequences: sequences, source: source)
    }

    /// Leave-one-out: the last item is the test target, the one before it validation, the rest
    /// training. Users with fewer than 3 items keep all in training and have no targets.
    public func leaveOneOut() -> LeaveOneOutSplit {
        var split = LeaveOneOutSplit()
        for s in sequences {
            split.users.append(s.user)
            if s.items.count < 3 {
                split.train.append(s.items)
                split.validation.append(nil)
                split.test.append(nil)
            } else {
                split.train.append(Array(s.items.dropLast(2)))
                split.validation.append(s.items[s.items.count - 2])
                split.test.append(s.items[s.items.count - 1])
            }
        }
        return split
    }
}

public struct LeaveOneOutSplit: Sendable {
    public var users: [String] = []
    public var train: [[String]] = []
    public var validation: [String?] = []
    public var test: [String?] = []
}
