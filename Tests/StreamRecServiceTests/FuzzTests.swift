import Foundation
import Testing
import StreamRecKafka
@testable import StreamRecService

/// 10,000 random and mutated payloads through the real pipeline: it stays up, and every record is
/// accounted for exactly once (answered or dead-lettered).
@Suite(.serialized) struct FuzzTests {
    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static func payloads(count: Int, seed: UInt64) -> [(key: String?, value: [UInt8])] {
        var rng = SplitMix(state: seed)
        let fragments = ["{", "}", "[", "]", "\"", ":", ",", "null", "true", "-1", "1e309", "\"user\"", "\"item\"", "\"ts\"", "\\u0000", "\u{FFFF}", "😀"]
        var out: [(key: String?, value: [UInt8])] = []
        for n in 0..<count {
            let user = "u\(rng.below(50))"
            var bytes = Array(#"{"user":"\#(user)","item":"i\#(rng.below(300))","ts":\#(1_700_000_000_000 + n),"type":"view"}"#.utf8)
            switch rng.below(10) {
            case 0, 1, 2:
                break                                                   // valid
            case 3:
                for _ in 0..<(1 + rng.below(4)) { bytes[rng.below(bytes.count)] = UInt8(rng.below(256)) }   // byte flips
            case 4:
                bytes = Array(bytes.prefix(rng.below(bytes.count)))     // truncation
            case 5:
                bytes = (0..<rng.below(120)).map { _ in UInt8(rng.below(256)) }   // noise
            case 6:
                var s = String(decoding: bytes, as: UTF8.self)
                let insert = fragments[rng.below(fragments.count)]
                let at = s.index(s.startIndex, offsetBy: rng.below(s.count))
                s.insert(contentsOf: insert, at: at)
                bytes = Array(s.utf8)                                   // structural insertions
            case 7:
                let field = ["user", "item", "ts", "type"][rng.below(4)]
                let value = ["1", "1.5", "true", "null", "[]", "{}", "\"\"", "\"x\""][rng.below(8)]
                bytes = Array(#"{"user":"\#(user)","item":"i1","ts":1,"\#(field)":\#(value)}"#.utf8)   // type confusion (duplicate key)
            case 8:
                // Oversize, rarely: the mock broker keeps only ~5 MB per partition, and a real
                // test of the limit needs few of them.
                if rng.below(10) == 0 {
                    bytes = Array(String(repeating: "a", count: 17_000 + rng.below(2000)).utf8)
                } else {
                    bytes = Array(String(repeating: "[", count: 1 + rng.below(600)).utf8)     // deep nesting
                }
            default:
                out.append((rng.below(2) == 0 ? nil : "u\(rng.below(60))", bytes))   // wrong or missing key
                continue
            }
            out.append((user, bytes))
        }
        return out
    }

    @Test func tenThousandPayloadsAllAccountedFor() throws {
        let training: [[String]] = (0..<30).map { u in (0..<10).map { "i\((u * 3 + $0) % 300)" } }
        let h = try MockClusterHarness(partitions: 3, trainingSequences: training)
        let records = Self.payloads(count: 10_000, seed: 42)
        #expect(records.count == 10_000)
        try h.produce(records)
        let service = try h.startService()
        var recs: [KafkaMessage] = []
        var dead: [KafkaMessage] = []
        let deadline = Date().addingTimeInterval(120)
        // Read both topics until every input record is accounted for.
        while recs.count + dead.count < records.count && Date() < deadline {
            recs = try h.read(h.output, timeoutSeconds: 5) { _ in false }
            dead = try h.read(h.dlq, timeoutSeconds: 5) { _ in false }
        }
        #expect(service.stack.pipeline.health.problem(nowMs: Pipeline.nowMs()) == nil, "the service must still be healthy")
        service.stop()
        #expect(service.error == nil)

        var seen: [String: Int] = [:]
        for m in recs {
            let obj = try JSONSerialization.jsonObject(with: Data(m.value ?? [])) as? [String: Any]
            let source = obj?["source"] as? [String: Any]
            let key = "\(source?["partition"] ?? -1):\(source?["offset"] ?? -1)"
            seen[key, default: 0] += 1
        }
        for m in dead {
            let key = "\(String(decoding: m.header("source-partition") ?? [], as: UTF8.self)):\(String(decoding: m.header("source-offset") ?? [], as: UTF8.self))"
            seen[key, default: 0] += 1
            #expect(m.header("dlq-code") != nil)
        }
        #expect(recs.count + dead.count == records.count)
        #expect(seen.count == records.count, "every input offset appears once")
        #expect(seen.values.allSatisfy { $0 == 1 })
        #expect(recs.count > 2_000 && dead.count > 2_000, "the mix exercises both paths: \(recs.count) answered, \(dead.count) dead-lettered")
    }
}
