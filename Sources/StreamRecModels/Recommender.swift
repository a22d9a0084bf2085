// The contract every model serves behind: a micro-batch of sessions in, top-K items out.

/// Dense id from the service's persisted vocabulary; 0 never names an item.
public typealias ItemID = UInt32

public struct ScoredItem: Sendable, Equatable {
    public var item: ItemID
    public var score: Float
    public init(item: ItemID, score: Float) {
        self.item = item
        self.score = score
    }
}

public struct ModelDescriptor: Sendable, Equatable, Codable {
    public var name: String
    public var version: String
    public init(name: String, version: String) {
        self.name = name
        self.version = version
    }
}

public struct RecommendationRequest: Sendable {
    public var user: String
    /// The session, oldest first.
    public var history: [ItemID]
    public var k: Int
    /// Never return these (the service fills it from its exclusion policy).
    public var exclude: Set<ItemID>

    public init(user: String, history: [ItemID], k: Int, exclude: Set<ItemID>) {
        self.user = user
        self.history = history
        self.k = k
        self.exclude = exclude
    }
}

/// Session in, top-K out. Batched: the pipeline calls it once per micro-batch.
public protocol Recommender: Sendable {
    var descriptor: ModelDescriptor { get }
    /// Result i answers request i: at most k items, best first, none in exclude, no duplicates.
    func recommend(_ requests: [RecommendationRequest]) -> [[ScoredItem]]
}

/// One error type for models, datasets and snapshots: a code and a message that says what to do.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case badData
        case badSnapshot
        case unsupported
    }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code.rawValue): \(message)" }
}

/// Keeps the k best (highest score) entries seen; ties go to the lower index for determinism.
/// A binary min-heap of size k: O(n log k) instead of sorting every candidate.
public struct TopK {
    public private(set) var heap: [(score: Float, index: Int32)] = []
    public let k: Int

    public init(k: Int) {
        self.k = max(0, k)
        heap.reserveCapacity(self.k)
    }

    @inline(__always)
    private static func worse(_ a: (score: Float, index: Int32), _ b: (score: Float, index: Int32)) -> Bool {
        a.score < b.score || (a.score == b.score && a.index > b.index)
    }

    /// The score an entry must beat to enter (when full).
    public var threshold: Float { heap.count < k ? -.infinity : heap[0].score }
    public var isFull: Bool { heap.count >= k }

    public mutating func insert(_ score: Float, _ index: Int32) {
        guard k > 0 else { return }
        let entry = (score: score, index: index)
        if heap.count < k {
            heap.append(entry)
            var i = heap.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard Self.worse(heap[i], heap[parent]) else { break }
                heap.swapAt(i, parent)
                i = parent
            }
        } else if Self.worse(heap[0], entry) {
            heap[0] = entry
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < heap.count && Self.worse(heap[l], heap[smallest]) { smallest = l }
                if r < heap.count && Self.worse(heap[r], heap[smallest]) { smallest = r }
                if smallest == i { break }
                heap.swapAt(i, smallest)
                i = smallest
            }
        }
    }

    /// Best first.
    public func sorted() -> [(score: Float, index: Int32)] {
        heap.sorted { Self.worse($1, $0) }
    }
}
