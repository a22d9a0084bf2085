// SASRec's serving: incremental inference behind the one serving adapter. Each active user keeps
// every block's keys and values, so an arriving event costs one position's work (a few d x d
// products and one attention row per block), not a re-run of the whole window.
//
// Windows and positions (left-aligned, see SASRec.swift):
//   cold user (no cache entry)         window = the last L items of the session, positions 0...
//   n new items, window + n <= L       append them at the next positions, reusing the cache
//   window would exceed L              rebuild from the last L - L/4 items, so the rebuild
//                                      (a full pass) happens once per L/4 events, not per event
// A rebuild is exactly what a full recompute of that window gives; the incremental path must
// match it (tested within 1e-4 over long random streams).
//
// The cache is an LRU of `cacheUsers` sessions; an evicted user costs one full pass on return.
import Foundation
import StreamRecCollections
import StreamRecNumerics

/// One user's incremental state.
final class SASRecSessionState {
    /// Model rows in the window, position i = window[i].
    var window: [Int32] = []
    /// Per block: keys and values of every position, [count, d] each.
    var keys: [[Float]]
    var values: [[Float]]
    /// Final hidden state of the last position [d].
    var hidden: [Float]

    init(blocks: Int, width: Int) {
        keys = Array(repeating: [], count: blocks)
        values = Array(repeating: [], count: blocks)
        hidden = [Float](repeating: 0, count: width)
    }
}

/// The incremental engine: full passes for cold or overflowing windows, one-position steps
/// batched across users otherwise. One caller at a time (the lock makes it safe regardless).
public final class SASRecIncremental: @unchecked Sendable {
    public let model: SASRec
    private var cache: LRUCache<String, SASRecSessionState>
    private let lock = NSLock()
    /// Counters for metrics and tests.
    public private(set) var fullPasses = 0
    public private(set) var incrementalSteps = 0

    public init(model: SASRec, cacheUsers: Int = 4096) {
        self.model = model
        cache = LRUCache(capacity: cacheUsers)
    }

    /// Items a rebuild keeps when a window outgrows L.
    var rebuildLength: Int { max(1, model.config.maxLength - max(1, model.config.maxLength / 4)) }

    /// Final hidden state [d] for each (user, session rows) pair, updating the cache. A user
    /// may appear several times in one batch (several events in one poll): the k-th request of
    /// each user is served in wave k, so each sees the state its predecessor left.
    public func hidden(users: [String], sessions: [[Int32]]) -> [[Float]] {
        lock.lock()
        defer { lock.unlock() }
        var seen: [String: Int] = [:]
        let waveOf = users.map { user -> Int in
            let wave = seen[user, default: 0]
            seen[user] = wave + 1
            return wave
        }
        let waves = (seen.values.max() ?? 0)
        if waves <= 1 { return hiddenOfDistinctUsers(users, sessions) }
        var out = [[Float]](repeating: [], count: users.count)
        for wave in 0..<waves {
            let members = users.indices.filter { waveOf[$0] == wave }
            let states = hiddenOfDistinctUsers(members.map { users[$0] }, members.map { sessions[$0] })
            for (i, member) in members.enumerated() { out[member] = states[i] }
        }
        return out
    }

    private func hiddenOfDistinctUsers(_ users: [String], _ sessions: [[Int32]]) -> [[Float]] {
        let c = model.config
        var states = [SASRecSessionState?](repeating: nil, count: users.count)
        var rebuild: [(index: Int, window: [Int32])] = []
        var pending: [(index: Int, items: ArraySlice<Int32>)] = []
        for (i, (user, rows)) in zip(users, sessions).enumerated() {
            guard !rows.isEmpty else { continue }
            if let state = cache.value(for: user), let newItems = Self.newItems(after: state.window, in: rows) {
                states[i] = state
                if newItems.isEmpty { continue }
                if state.window.count + newItems.count <= c.maxLength {
                    pending.append((i, newItems))
                    continue
                }
                rebuild.append((i, Array(rows.suffix(rebuildLength))))
            } else {
                rebuild.append((i, Array(rows.suffix(c.maxLength))))
            }
        }
        for (i, state) in fullPass(rebuild.map(\.window)).enumerated() {
            states[rebuild[i].index] = state
            cache.set(state, for: users[rebuild[i].index])
        }
        // Steps in rounds: round r advances every user with more than r new items by one.
        var round = 0
        while true {
            let active = pending.filter { $0.items.count > round }
            if active.isEmpty { break }
            step(active.map { states[$0.index]! }, items: active.map { $0.items[$0.items.startIndex + round] })
            round += 1
        }
        return states.map { $0?.hidden ?? [Float](repeating: 0, count: c.width) }
    }

    /// The items of `rows` after the cached window, if rows continues it: the window must
    /// appear in rows ending at most 64 items before its end (a burst of events since).
    static func newItems(after window: [Int32], in rows: [Int32]) -> ArraySlice<Int32>? {
        guard !window.isEmpty else { return nil }
        let maxNew = min(64, rows.count - window.count)
        guard maxNew >= 0 else { return nil }
        // One new item is the common case (a request per event), then none (a repeated request).
        for k in [1, 0] + Array(stride(from: 2, through: maxNew, by: 1)) where k <= maxNew {
            let end = rows.count - k
            if rows[(end - window.count)..<end].elementsEqual(window) { return rows[end...] }
        }
        return nil
    }

    /// Full recompute of windows (packed), keeping each block's keys and values.
    func fullPass(_ windows: [[Int32]]) -> [SASRecSessionState] {
        guard !windows.isEmpty else { return [] }
        let c = model.config, d = c.width
        fullPasses += windows.count
        let layout = SequenceLayout(lengths: windows.map(\.count))
        let states = windows.map { w -> SASRecSessionState in
            let s = SASRecSessionState(blocks: c.blocks, width: d)
            s.window = w
            return s
        }
        let tape = Tape(recording: false, training: false)
        let h = model.hidden(tape, ids: windows.flatMap { $0 }, layout: layout) { block, qkv in
            for (s, state) in states.enumerated() {
                let o = layout.offsets[s], n = layout.lengths[s]
                var k = [Float](repeating: 0, count: n * d), v = [Float](repeating: 0, count: n * d)
                for i in 0..<n {
                    for j in 0..<d {
                        k[i * d + j] = qkv.data[(o + i) * 3 * d + d + j]
                        v[i * d + j] = qkv.data[(o + i) * 3 * d + 2 * d + j]
                    }
                }
                state.keys[block] = k
                state.values[block] = v
            }
        }
        for (s, state) in states.enumerated() {
            let row = layout.offsets[s] + layout.lengths[s] - 1
            state.hidden = Array(UnsafeBufferPointer(start: h.data + row * d, count: d))
        }
        withExtendedLifetime(h) {}
        return states
    }

    /// Appends one item to each state: the model's own block code (TransformerBlock) applied to one
    /// new position per user, attending over that user's cached keys and values.
    func step(_ states: [SASRecSessionState], items: [Int32]) {
        let c = model.config, d = c.width
        incrementalSteps += states.count
        let positions = states.map { state -> Int32 in
            precondition(state.window.count < c.maxLength, "SASRec step past the window (\(state.window.count) >= \(c.maxLength))")
            return Int32(state.window.count)
        }
        for (state, item) in zip(states, items) { state.window.append(item) }
        let tape = Tape(recording: false, training: false)
        var x = model.embed(tape, ids: items, positions: positions)
        for block in model.blocks {
            x = block(tape, x, .cached { session, body in
                let state = states[session]
                state.keys[block.index].withUnsafeBufferPointer { k in
                    state.values[block.index].withUnsafeBufferPointer { v in body(k.baseAddress!, v.baseAddress!, state.window.count) }
                }
            }, keysAndValues: { b, qkv in
                for (i, state) in states.enumerated() {
                    let row = qkv.data + i * 3 * d
                    state.keys[b].append(contentsOf: UnsafeBufferPointer(start: row + d, count: d))
                    state.values[b].append(contentsOf: UnsafeBufferPointer(start: row + 2 * d, count: d))
                }
            })
        }
        let h = model.finalNorm(tape, x)
        for (i, state) in states.enumerated() { state.hidden = Array(UnsafeBufferPointer(start: h.data + i * d, count: d)) }
        withExtendedLifetime(h) {}
    }

    /// The window cached for a user (tests and `inspect`).
    public func peekWindow(_ user: String) -> [Int32]? {
        lock.lock()
        defer { lock.unlock() }
        return cache.peek(user)?.window
    }

    /// Drops every cached session (a model swap makes them stale).
    public func invalidateAll() {
        lock.lock()
        cache.removeAll()
        lock.unlock()
    }
}

/// SASRec's part of serving: dense scores from the incremental hidden states, over the item
/// table and the rows of items added from text (LLM2SASRec's cold start).
public final class SASRecSessionScorer: SessionScorer, @unchecked Sendable {
    public let engine: SASRecIncremental
    private var table: TiedTableScores

    public init(model: SASRec, cacheUsers: Int = 4096) {
        engine = SASRecIncremental(model: model, cacheUsers: cacheUsers)
        table = TiedTableScores(projection: model.textProjection, width: model.config.width)
    }

    public var rowCount: Int { engine.model.items.count + table.appendedCount }

    public var textDimension: Int? { engine.model.textProjection?.textDimension }

    public func appendRows(items: [String], vectors: [Float]) -> Int {
        let first = rowCount
        table.append(vectors: vectors)
        return first
    }

    public func score(users: [String], sessions: [[Int32]]) -> SessionScores {
        let model = engine.model, v = model.items.count
        let hidden = engine.hidden(users: users, sessions: sessions.map { $0.filter { Int($0) < v } })
        return table.scores(hidden: hidden.flatMap { $0 }, count: sessions.count, table: model.store["item_embedding"].data, items: v)
    }
}

extension SASRec: CatalogueModel {
    public var kind: String { Self.kind }
    public func sessionScorer(_ options: ServingOptions) -> any SessionScorer {
        SASRecSessionScorer(model: self, cacheUsers: options.cacheUsers)
    }
}
