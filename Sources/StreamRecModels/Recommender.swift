// The contract every model serves behind (a micro-batch of sessions in, top-K items out), the
// one error type of this module, and the top-K selection that every model ranks with.
import Foundation
import StreamRecNumerics

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

/// One error type for models, datasets and snapshots: what kind of problem, and a message that
/// names the file (and line) and says what to do about it.
public struct ModelError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public enum Code: String, Sendable {
        /// Training or evaluation data that cannot be parsed.
        case badData
        /// A snapshot file that is missing, corrupt, of the wrong kind, or cannot be written.
        case badSnapshot
        /// A request this build cannot serve (a format or model kind it does not know).
        case unsupported
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
    public var errorDescription: String? { description }
}

/// Keeps the k best candidates of a stream in a min-heap whose root is the worst one kept, so
/// choosing the top k of n costs O(n log k) instead of sorting all n. Higher score is better;
/// equal scores go to the smaller id, so the answer does not depend on arrival order.
public struct TopK: Sendable {
    public struct Entry: Sendable, Equatable {
        public var score: Float
        public var id: Int

        public init(score: Float, id: Int) {
            self.score = score
            self.id = id
        }
    }

    public let k: Int
    private var heap: [Entry] = []

    public init(k: Int) {
        self.k = max(0, k)
        // k may be "everything" (Int.max); reserve only what a typical answer needs.
        heap.reserveCapacity(min(self.k, 1024))
    }

    public var count: Int { heap.count }
    public var isFull: Bool { heap.count >= k }

    /// Once full, the score a candidate must exceed (or tie with a smaller id) to enter; callers
    /// use it to skip work for hopeless candidates. Nil while there is still room.
    public var threshold: Float? { isFull && k > 0 ? heap[0].score : nil }

    @inline(__always)
    private static func isBetter(_ a: Entry, than b: Entry) -> Bool {
        a.score > b.score || (a.score == b.score && a.id < b.id)
    }

    /// NaN scores are ignored: they compare false with everything and would corrupt the heap.
    public mutating func insert(score: Float, id: Int) {
        guard k > 0, !score.isNaN else { return }
        let entry = Entry(score: score, id: id)
        if heap.count < k {
            heap.append(entry)
            siftUp(from: heap.count - 1)
        } else if Self.isBetter(entry, than: heap[0]) {
            heap[0] = entry
            siftDown(from: 0)
        }
    }

    /// The entries kept, best first.
    public func sorted() -> [Entry] {
        heap.sorted { Self.isBetter($0, than: $1) }
    }

    /// Top k of a dense score vector where the id is the index (a full-catalogue scorer's output).
    public static func select(_ scores: [Float], k: Int) -> [Entry] {
        var top = TopK(k: k)
        scores.withUnsafeBufferPointer { top.scan($0.baseAddress!, count: $0.count) }
        return top.sorted()
    }

    /// Offers scores[0..<count] with ids base + index. Entries of -infinity (how callers mark
    /// excluded rows) and NaN never enter. Once the heap is full, the native kernel skips 16 scores
    /// at a time that cannot beat its threshold, so a catalogue scan touches the heap only for the
    /// few rows that can still enter. Same result as inserting every row in order (tested).
    public mutating func scan(_ scores: UnsafePointer<Float>, count: Int, base: Int = 0) {
        guard k > 0 else { return }
        var i = 0
        while i < count && !isFull {
            if scores[i] > -.infinity { insert(score: scores[i], id: base + i) }
            i += 1
        }
        guard isFull else { return }
        // Ids rise during the scan, so a tie with the threshold never enters: only > can.
        var floor = heap[0].score
        while true {
            i += Kernels.firstAbove(scores + i, count - i, floor)
            guard i < count else { return }
            insert(score: scores[i], id: base + i)
            floor = heap[0].score
            i += 1
        }
    }

    private mutating func siftUp(from start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.isBetter(heap[parent], than: heap[child]) else { return }
            heap.swapAt(parent, child)
            child = parent
        }
    }

    private mutating func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1, right = left + 1
            var worst = parent
            if left < heap.count && Self.isBetter(heap[worst], than: heap[left]) { worst = left }
            if right < heap.count && Self.isBetter(heap[worst], than: heap[right]) { worst = right }
            if worst == parent { return }
            heap.swapAt(parent, worst)
            parent = worst
        }
    }
}
