import Foundation
import Testing
@testable import StreamRecService

@Suite struct EventParserTests {
    let rules = EventRules()

    func parse(_ value: String?, key: String? = "u1", rules: EventRules? = nil) -> Result<InteractionEvent, Rejection> {
        EventParser.parse(key: key.map { Array($0.utf8) }, value: value.map { Array($0.utf8) }, rules: rules ?? self.rules)
    }

    @Test func validEvents() throws {
        let full = try parse(#"{"user":"u1","item":"i9","ts":1700000000000,"type":"purchase","id":"e-1"}"#).get()
        #expect(full == InteractionEvent(user: "u1", item: "i9", timestampMs: 1_700_000_000_000, type: "purchase", id: "e-1"))
        let minimal = try parse(#"{"user":"u1","item":"i9","ts":5}"#).get()
        #expect(minimal.type == nil && minimal.id == nil && minimal.timestampMs == 5)
        // Unknown extra fields are allowed (forward compatibility); a float with no fraction is an integer.
        let extra = try parse(#"{"user":"u1","item":"i9","ts":7.0,"page":"home","type":null}"#).get()
        #expect(extra.timestampMs == 7)
        // Commas and brackets inside strings are not structure.
        let commas = try parse(#"{"user":"u1","item":"a,}b,]","ts":1}"#).get()
        #expect(commas.item == "a,}b,]")
        let unicode = try parse(#"{"user":"u1","item":"café ☕","ts":1}"#).get()
        #expect(unicode.item == "café ☕")
    }

    /// Every way a record can be bad, with the code it must get.
    @Test(arguments: [
        (nil as String?, "u1" as String?, Rejection.Code.emptyValue),
        ("", "u1", .emptyValue),
        ("{not json", "u1", .malformedJSON),
        (#"{"user":"u1","item":"i1","ts":1"#, "u1", .malformedJSON),
        ("[1,2,3]", "u1", .notAnObject),
        ("\"just a string\"", "u1", .notAnObject),
        (#"{"item":"i1","ts":1}"#, "u1", .missingField),
        (#"{"user":"u1","ts":1}"#, "u1", .missingField),
        (#"{"user":"u1","item":"i1"}"#, "u1", .missingField),
        (#"{"user":"u1","item":null,"ts":1}"#, "u1", .missingField),
        (#"{"user":"u1","item":"i1","ts":null}"#, "u1", .missingField),
        (#"{"user":"u1","item":"i1","ts":1,}"#, "u1", .malformedJSON),
        (#"{"user":"u1","item":"i1","ts":1, "tags":["a",]}"#, "u1", .malformedJSON),
        (#"{"user":1,"item":"i1","ts":1}"#, "u1", .badType),
        (#"{"user":"u1","item":["i1"],"ts":1}"#, "u1", .badType),
        (#"{"user":"u1","item":"i1","ts":"yesterday"}"#, "u1", .badType),
        (#"{"user":"u1","item":"i1","ts":1.5}"#, "u1", .badType),
        (#"{"user":"u1","item":"i1","ts":true}"#, "u1", .badType),
        (#"{"user":true,"item":"i1","ts":1}"#, "u1", .badType),
        (#"{"user":"u1","item":"i1","ts":1,"type":7}"#, "u1", .badType),
        (#"{"user":"u1","item":"i1","ts":1,"id":42}"#, "u1", .badType),
        (#"{"user":"u1","item":"i1","ts":-5}"#, "u1", .badValue),
        (#"{"user":"","item":"i1","ts":1}"#, "", .badValue),
        (#"{"user":"u1","item":"i1","ts":1,"type":"teleport"}"#, "u1", .unknownEventType),
        (#"{"user":"u1","item":"i1","ts":1}"#, "u2", .keyMismatch),
        (#"{"user":"u1","item":"i1","ts":1}"#, nil, .keyMismatch),
    ])
    func rejected(value: String?, key: String?, expected: Rejection.Code) {
        switch parse(value, key: key) {
        case .success(let e): Issue.record("accepted \(String(describing: value)) as \(e)")
        case .failure(let r):
            #expect(r.code == expected, "\(String(describing: value)): \(r.reason)")
            #expect(!r.reason.isEmpty)
        }
    }

    @Test func oversizeAndInvalidUTF8() {
        var small = EventRules()
        small.maxValueBytes = 64
        let big = #"{"user":"u1","item":""# + String(repeating: "x", count: 100) + #"","ts":1}"#
        #expect(throws: Rejection.self) { try parse(big, rules: small).get() }
        #expect((try? parse(big, rules: small).get()) == nil)
        if case .failure(let r) = parse(big, rules: small) { #expect(r.code == .oversize) }

        var bytes = Array(#"{"user":"u1","item":"i"#.utf8)
        bytes += [0xC3, 0x28]   // an invalid two-byte sequence
        bytes += Array(#"","ts":1}"#.utf8)
        let result = EventParser.parse(key: Array("u1".utf8), value: bytes, rules: rules)
        if case .failure(let r) = result { #expect(r.code == .invalidUTF8) } else { Issue.record("invalid UTF-8 accepted") }
    }

    @Test func keyCheckCanBeTurnedOff() throws {
        var lenient = EventRules()
        lenient.requireKeyMatchesUser = false
        let e = try parse(#"{"user":"u1","item":"i1","ts":1}"#, key: nil, rules: lenient).get()
        #expect(e.user == "u1")
    }

    @Test func longIdsRejected() {
        let long = String(repeating: "a", count: 300)
        if case .failure(let r) = parse(#"{"user":"u1","item":"\#(long)","ts":1}"#) { #expect(r.code == .badValue) } else { Issue.record("accepted") }
    }

    @Test func outputJSONEscapesWhatItMustAndParsesBack() throws {
        var json = JSONBytes(capacity: 64)
        let tricky = "q\"b\\n\nr\rt\t\u{01}\u{1f}é☕"
        json.raw("{\"s\":"); json.string(tricky)
        json.raw(",\"f\":"); json.number(0.1)
        json.raw(",\"inf\":"); json.number(.infinity)
        json.raw(",\"i\":"); json.int(-42)
        json.raw("}")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.bytes)) as? [String: Any])
        #expect(object["s"] as? String == tricky)
        #expect((object["f"] as? NSNumber)?.floatValue == 0.1)
        #expect((object["inf"] as? NSNumber)?.intValue == 0)
        #expect((object["i"] as? NSNumber)?.intValue == -42)
    }
}

