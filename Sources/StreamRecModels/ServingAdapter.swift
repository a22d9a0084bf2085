// The one serving adapter: every model answers the service through it. It owns what is the same
// for every model, so models differ only in how they score:
//   - the mapping between the service's item ids and model rows, with one guard: a row the
//     vocabulary maps to 0, or to an id another row already has, is never answered
//   - the cold-user policy: a session with no item the model knows gets the same answer from
//     every model (popularity from the snapshot by default)
//   - exclusion of the items the request excludes, and the top-K
// A model plugs in a SessionScorer: dense scores over every row (SASRec from its incremental
// hidden states, DiffuRec from its sampler, LLMSeqSim from cosine similarity) or sparse
// candidates (the transition model's successors), which popular items then fill up to k.
import Foundation
import StreamRecNumerics

/// How every model answers a user whose session holds no item the model knows.
public enum ColdUserPolicy: String, Sendable, CaseIterable {
    /// The most popular items of the snapshot's training data (minus exclusions).
    case popularity
    /// No answer (an empty recommendation list).
    case none
}

public struct ServingOptions: Sendable {
    /// Users whose incremental state is cached (SASRec).
    public var cacheUsers = 4096
    public var coldUsers: ColdUserPolicy = .popularity

    public init(cacheUsers: Int = 4096, coldUsers: ColdUserPolicy = .popularity) {
        self.cacheUsers = cacheUsers
        self.coldUsers = coldUsers
    }
}

/// A model's scores for a batch of sessions.
public enum SessionScores {
    /// sessions.count x rowCount, row-major: every row scored.
    case dense([Float])
    /// Per session, candidate rows and their scores (any order, each row at most once); rows
    /// not listed are not candidates.
    case sparse([[(row: Int32, score: Float)]])
}

extension SessionScores {
    /// Dense scores of a full-catalogue scorer (the same scores offline evaluation ranks).
    public static func dense(_ scorer: some CatalogScorer, sessions: [[Int32]]) -> SessionScores {
        let count = sessions.count * scorer.items.count
        return .dense([Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            buffer.initialize(repeating: 0)
            scorer.scoreAll(histories: sessions, into: buffer.baseAddress!)
            initialized = count
        })
    }
}

/// The scores of a model that ranks by a dot product with its item table (SASRec, BERT4Rec):
/// h E^T over the table's rows, then rows appended for items added from text after the snapshot
/// (cold-start, projected into the model's space by its text projection). Appended rows are
/// candidates only: they have no learned input row, so sessions skip them.
struct TiedTableScores {
    let projection: TextProjection?
    let width: Int
    /// [n, d]; only touched under the serving adapter's lock.
    private(set) var appended: [Float] = []

    init(projection: TextProjection?, width: Int) {
        self.projection = projection
        self.width = width
    }

    var appendedCount: Int { appended.count / width }

    mutating func append(vectors: [Float]) {
        guard let projection else { return }
        appended.append(contentsOf: projection.project(vectors))
    }

    /// [B, V + n] for hidden states [B, d] against the table [V, d] and the appended rows.
    func scores(hidden: [Float], count b: Int, table: UnsafePointer<Float>, items v: Int) -> SessionScores {
        let d = width, n = appendedCount, columns = v + n
        // Every entry is written by the products (beta = 0): no need to zero the scores first.
        return .dense([Float](unsafeUninitializedCapacity: b * columns) { buffer, initialized in
            hidden.withUnsafeBufferPointer { h in
                if b == 1 {
                    BLAS.gemv(m: v, n: d, a: table, lda: d, x: h.baseAddress!, y: buffer.baseAddress!)
                } else {
                    Parallel.gemm(transB: true, m: b, n: v, k: d, a: h.baseAddress!, lda: d, b: table, ldb: d, c: buffer.baseAddress!, ldc: columns)
                }
                if n > 0 {
                    appended.withUnsafeBufferPointer { t in
                        BLAS.gemm(transB: true, m: b, n: n, k: d, a: h.baseAddress!, lda: d, b: t.baseAddress!, ldb: d,
                                  c: buffer.baseAddress! + v, ldc: columns)
                    }
                }
            }
            initialized = b * columns
        })
    }
}

/// What a model plugs into the serving adapter. The adapter calls it with its lock held, one
/// batch at a time.
public protocol SessionScorer: AnyObject, Sendable {
    /// Rows scored now: the snapshot's items, plus rows appended since.
    var rowCount: Int { get }
    /// Scores for sessions of model rows (oldest first, each with at least one row). `users`
    /// names each session's user, for models that keep per-user state.
    func score(users: [String], sessions: [[Int32]]) -> SessionScores
    /// Width of the text vectors `appendRows` takes; nil when the model cannot add items.
    var textDimension: Int? { get }
    /// Appends rows for new items from their text vectors ([n, textDimension]); returns the
    /// first new row.
    func appendRows(items: [String], vectors: [Float]) -> Int
}

extension SessionScorer {
    public var textDimension: Int? { nil }
    public func appendRows(items: [String], vectors: [Float]) -> Int { rowCount }
}

/// A recommender that can take items it has never seen, given their text embedding (the
/// `items` topic): LLMSeqSim directly, LLM2SASRec through its text projection.
public protocol ItemExtensibleRecommender: Recommender {
    /// Width of the text vectors `addItems` takes; nil when this model cannot add items.
    var textDimension: Int? { get }
    /// Whether the model ranks this item already.
    func knows(_ item: ItemID) -> Bool
    /// Makes the items rankable from the next call on. Items already known are skipped.
    func addItems(_ items: [(id: ItemID, external: String, textVector: [Float])])
}

/// Any catalogue model answering the service.
public final class CatalogueRecommender: ItemExtensibleRecommender, @unchecked Sendable {
    public let descriptor: ModelDescriptor
    public let scorer: any SessionScorer
    public let coldUsers: ColdUserPolicy
    private let lock = NSLock()
    /// Model row -> service id; 0 for a row that must not be answered.
    private var idOfRow: [ItemID]
    /// Service id -> model row.
    private var rowOf: [ItemID: Int32]
    /// Rows answered to cold users, most popular first (no 0 or duplicate ids).
    private let popularRows: [Int32]
    private let popularity: [Float]
    private let maxPopularity: Float
    /// Rows never answered (the 0 and duplicate guard), marked in dense scores.
    private let unanswerable: [Int32]

    /// Binds a loaded model to the service's vocabulary: `itemID` gives (and assigns) the
    /// service id of each model item, once per item.
    public init(_ loaded: LoadedModel, options: ServingOptions = .init(), itemID: (String) -> ItemID) {
        let model = loaded.model
        descriptor = ModelDescriptor(name: model.kind, version: model.version)
        scorer = model.sessionScorer(options)
        coldUsers = options.coldUsers
        var idOfRow = model.items.map(itemID)
        var rowOf: [ItemID: Int32] = [:]
        rowOf.reserveCapacity(idOfRow.count)
        var unanswerable: [Int32] = []
        for (row, id) in idOfRow.enumerated() {
            if id == 0 || rowOf[id] != nil {
                idOfRow[row] = 0
                unanswerable.append(Int32(row))
            } else {
                rowOf[id] = Int32(row)
            }
        }
        self.idOfRow = idOfRow
        self.rowOf = rowOf
        self.unanswerable = unanswerable
        let popularity = loaded.popularity ?? []
        self.popularity = popularity
        maxPopularity = max(popularity.max() ?? 1, 1)
        // Ties go to the smaller external id: rows are ordered differently by each model, and
        // every model must give a cold user the same answer.
        let items = model.items
        popularRows = popularity.indices.filter { popularity[$0] > 0 && idOfRow[$0] != 0 }
            .sorted { popularity[$0] > popularity[$1] || (popularity[$0] == popularity[$1] && items[$0] < items[$1]) }.map(Int32.init)
    }

    /// Whether cold users can get popular items (false for a snapshot written before
    /// `item_popularity` whose model keeps no popularity: its cold users get no answer).
    public var hasPopularity: Bool { !popularRows.isEmpty }

    public var textDimension: Int? { scorer.textDimension }

    public func knows(_ item: ItemID) -> Bool { lock.withLock { rowOf[item] != nil } }

    public func addItems(_ items: [(id: ItemID, external: String, textVector: [Float])]) {
        guard let width = scorer.textDimension else { return }
        lock.withLock {
            var seen = Set<ItemID>()
            let fresh = items.filter { $0.id != 0 && rowOf[$0.id] == nil && $0.textVector.count == width && seen.insert($0.id).inserted }
            guard !fresh.isEmpty else { return }
            let first = scorer.appendRows(items: fresh.map(\.external), vectors: fresh.flatMap(\.textVector))
            precondition(first == idOfRow.count, "a scorer appended rows out of order")
            for (i, item) in fresh.enumerated() {
                rowOf[item.id] = Int32(first + i)
                idOfRow.append(item.id)
            }
        }
    }

    public func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]] {
        guard !requests.isEmpty else { return [] }
        // Held for the whole batch: rows appended by addItems wait for it (between micro-batches).
        return lock.withLock {
            let sessions = requests.map { $0.history.compactMap { rowOf[$0] } }
            var answers = [[ScoredItem]](repeating: [], count: requests.count)
            let warm = sessions.indices.filter { !sessions[$0].isEmpty }
            for i in sessions.indices where sessions[i].isEmpty && coldUsers == .popularity {
                answers[i] = fill([], k: requests[i].k, exclude: requests[i].exclude, ceiling: 0.5)
            }
            guard !warm.isEmpty else { return answers }
            switch scorer.score(users: warm.map { requests[$0].user }, sessions: warm.map { sessions[$0] }) {
            case .dense(var scores):
                rankDense(&scores, warm: warm, requests: requests, into: &answers)
            case .sparse(let candidates):
                for (j, i) in warm.enumerated() {
                    answers[i] = rankSparse(candidates[j], request: requests[i])
                }
            }
            return answers
        }
    }

    /// Excluded and unanswerable rows become -infinity in place; each answer is then one vector
    /// scan. The answers are independent, so they are split over the cores.
    private func rankDense(_ scores: inout [Float], warm: [Int], requests: [RecommendationRequest], into answers: inout [[ScoredItem]]) {
        let v = scorer.rowCount
        precondition(scores.count == warm.count * v, "a dense scorer returned \(scores.count) scores for \(warm.count) x \(v)")
        let rowOf = self.rowOf, idOfRow = self.idOfRow, unanswerable = self.unanswerable
        var ranked = [[ScoredItem]](repeating: [], count: warm.count)
        scores.withUnsafeMutableBufferPointer { scoreBuffer in
            ranked.withUnsafeMutableBufferPointer { out in
                let base = scoreBuffer.baseAddress!, results = out.baseAddress!
                Parallel.chunks(warm.count, grain: 16) { range, _ in
                    for j in range {
                        let request = requests[warm[j]]
                        let row = base + j * v
                        for r in unanswerable { row[Int(r)] = -.infinity }
                        for item in request.exclude { if let r = rowOf[item] { row[Int(r)] = -.infinity } }
                        var top = TopK(k: request.k)
                        top.scan(row, count: v)
                        results[j] = top.sorted().map { ScoredItem(item: idOfRow[$0.id], score: $0.score) }
                    }
                }
            }
        }
        for (j, i) in warm.enumerated() { answers[i] = ranked[j] }
    }

    /// The best candidates, then popular items below the lowest of them up to k.
    private func rankSparse(_ candidates: [(row: Int32, score: Float)], request: RecommendationRequest) -> [ScoredItem] {
        var top = TopK(k: request.k)
        for candidate in candidates {
            let id = idOfRow[Int(candidate.row)]
            if id != 0 && !request.exclude.contains(id) { top.insert(score: candidate.score, id: Int(candidate.row)) }
        }
        let answer = top.sorted().map { ScoredItem(item: idOfRow[$0.id], score: $0.score) }
        guard answer.count < request.k else { return answer }
        return fill(answer, k: request.k, exclude: request.exclude, ceiling: 0.5 * (answer.last?.score ?? 1))
    }

    /// Appends popular items not yet in `answer` nor excluded, scored popularity / max
    /// popularity x ceiling, so they keep their order and stay below what is already there.
    private func fill(_ answer: [ScoredItem], k: Int, exclude: Set<ItemID>, ceiling: Float) -> [ScoredItem] {
        var answer = answer
        guard answer.count < k else { return answer }
        let chosen = Set(answer.map(\.item))
        for row in popularRows {
            let id = idOfRow[Int(row)]
            if chosen.contains(id) || exclude.contains(id) { continue }
            answer.append(ScoredItem(item: id, score: ceiling * popularity[Int(row)] / maxPopularity))
            if answer.count == k { break }
        }
        return answer
    }
}

extension CatalogueModel {
    /// This model behind the serving adapter, bound to a vocabulary (`itemID` is called once per
    /// model item). `popularity` answers cold users; by default the model's own, if it keeps one.
    public func bind(cacheUsers: Int = 4096, coldUsers: ColdUserPolicy = .popularity, popularity: [Float]? = nil,
                     itemID: (String) -> ItemID) -> CatalogueRecommender {
        CatalogueRecommender(LoadedModel(model: self, popularity: popularity ?? ownPopularity),
                             options: ServingOptions(cacheUsers: cacheUsers, coldUsers: coldUsers), itemID: itemID)
    }
}
