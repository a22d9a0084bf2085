// The event contract (docs/events.md): what an interaction is on the wire, and every way a record
// can fail to be one. Parsing never throws: a bad record becomes a Rejection that the pipeline
// sends to the dead-letter topic with its code and reason.
import Foundation

/// A valid interaction event from the input topic.
public struct InteractionEvent: Sendable, Equatable {
    public var user: String
    public var item: String
    public var timestampMs: Int64
    public var type: String?
    public var id: String?
}

/// Why a record was dead-lettered. Codes are stable (dashboards and alerts key on them).
public struct Rejection: Sendable, Equatable, Error {
    public enum Code: String, Sendable, CaseIterable {
        case emptyValue = "empty-value"
        case oversize = "oversize"
        case invalidUTF8 = "invalid-utf8"
        case malformedJSON = "malformed-json"
        case notAnObject = "not-an-object"
        case missingField = "missing-field"
        case badType = "bad-type"
        case badValue = "bad-value"
        case unknownEventType = "unknown-event-type"
        case keyMismatch = "key-mismatch"
    }
    public var code: Code
    public var reason: String
}

public struct EventRules: Sendable, Equatable {
    /// Largest accepted value in bytes; bigger records are dead-lettered unparsed.
    public var maxValueBytes: Int = 16 * 1024
    /// Accepted values of "type"; an absent type is accepted and means "view".
    public var allowedTypes: Set<String> = ["view", "click", "purchase", "add_to_cart"]
    /// Longest user or item id, in UTF-8 bytes.
    public var maxIdBytes: Int = 256
    /// The record key must be the user id, because partitioning by user is what keeps one user's
    /// session on one instance. Turn off only for single-instance deployments.
    public var requireKeyMatchesUser: Bool = true
    public init() {}
}

public enum EventParser {
    public static func parse(key: [UInt8]?, value: [UInt8]?, rules: EventRules) -> Result<InteractionEvent, Rejection> {
        guard let value, !value.isEmpty else {
            return .failure(Rejection(code: .emptyValue, reason: "the record has no value; expected a JSON object"))
        }
        if value.count > rules.maxValueBytes {
            return .failure(Rejection(code: .oversize, reason: "value is \(value.count) bytes, over the limit of \(rules.maxValueBytes) (events.max_value_bytes)"))
        }
        guard String(validating: value, as: UTF8.self) != nil else {
            return .failure(Rejection(code: .invalidUTF8, reason: "value is not valid UTF-8"))
        }
        if let offset = trailingComma(value) {
            // Foundation's parser accepts `{"a":1,}`; JSON (RFC 8259) does not, and neither do we.
            return .failure(Rejection(code: .malformedJSON, reason: "value is not JSON: a trailing comma at byte \(offset)"))
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(value), options: [.fragmentsAllowed])
        } catch {
            return .failure(Rejection(code: .malformedJSON, reason: "value is not JSON: \(shortError(error))"))
        }
        guard let dict = object as? [String: Any] else {
            return .failure(Rejection(code: .notAnObject, reason: "value is JSON but not an object; expected {\"user\", \"item\", \"ts\"}"))
        }
        let user: String
        let item: String
        switch requiredString(dict, "user", rules) { case .success(let s): user = s; case .failure(let r): return .failure(r) }
        switch requiredString(dict, "item", rules) { case .success(let s): item = s; case .failure(let r): return .failure(r) }
        guard let rawTs = dict["ts"], !(rawTs is NSNull) else {
            return .failure(Rejection(code: .missingField, reason: "field \"ts\" (milliseconds since the epoch) is missing"))
        }
        guard let ts = integer(rawTs) else {
            return .failure(Rejection(code: .badType, reason: "field \"ts\" must be an integer number of milliseconds, got \(jsonTypeName(rawTs))"))
        }
        guard ts >= 0 else {
            return .failure(Rejection(code: .badValue, reason: "field \"ts\" must not be negative, got \(ts)"))
        }
        var type: String? = nil
        if let rawType = dict["type"], !(rawType is NSNull) {
            guard let t = rawType as? String, !isBool(rawType) else {
                return .failure(Rejection(code: .badType, reason: "field \"type\" must be a string, got \(jsonTypeName(rawType))"))
            }
            guard rules.allowedTypes.contains(t) else {
                return .failure(Rejection(code: .unknownEventType, reason: "event type \"\(t.prefix(64))\" is not one of \(rules.allowedTypes.sorted()) (events.allowed_types)"))
            }
            type = t
        }
        var id: String? = nil
        if let rawId = dict["id"], !(rawId is NSNull) {
            guard let s = rawId as? String else {
                return .failure(Rejection(code: .badType, reason: "field \"id\" must be a string, got \(jsonTypeName(rawId))"))
            }
            id = s
        }
        if rules.requireKeyMatchesUser {
            let keyString = key.flatMap { String(validating: $0, as: UTF8.self) }
            if keyString != user {
                let shown = keyString.map { "\"\($0.prefix(64))\"" } ?? (key == nil ? "null" : "non-UTF-8 bytes")
                return .failure(Rejection(code: .keyMismatch, reason: "record key \(shown) is not the user id \"\(user.prefix(64))\"; produce with key = user so each user's events land on one partition"))
            }
        }
        return .success(InteractionEvent(user: user, item: item, timestampMs: ts, type: type, id: id))
    }

    /// The offset of a comma followed (after whitespace) by `}` or `]` outside strings, or nil.
    static func trailingComma(_ bytes: [UInt8]) -> Int? {
        var inString = false, escaped = false
        var lastComma: Int? = nil
        for (i, b) in bytes.enumerated() {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true; lastComma = nil
            case UInt8(ascii: ","): lastComma = i
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if let lastComma { return lastComma }
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): break
            default: lastComma = nil
            }
        }
        return nil
    }

    private static func requiredString(_ dict: [String: Any], _ field: String, _ rules: EventRules) -> Result<String, Rejection> {
        guard let raw = dict[field], !(raw is NSNull) else {
            return .failure(Rejection(code: .missingField, reason: "field \"\(field)\" is missing"))
        }
        guard let s = raw as? String, !isBool(raw) else {
            return .failure(Rejection(code: .badType, reason: "field \"\(field)\" must be a string, got \(jsonTypeName(raw))"))
        }
        if s.isEmpty {
            return .failure(Rejection(code: .badValue, reason: "field \"\(field)\" must not be empty"))
        }
        if s.utf8.count > rules.maxIdBytes {
            return .failure(Rejection(code: .badValue, reason: "field \"\(field)\" is \(s.utf8.count) bytes, over \(rules.maxIdBytes) (events.max_id_bytes)"))
        }
        return .success(s)
    }

    /// JSON numbers arrive as NSNumber; accept only exact integers (not 1.5, not true).
    private static func integer(_ value: Any) -> Int64? {
        if isBool(value) { return nil }
        if let i = value as? Int64 { return i }
        if let i = value as? Int { return Int64(i) }
        if let d = value as? Double, d.rounded() == d, abs(d) < 9.0e15 { return Int64(d) }
        return nil
    }

    /// Foundation boxes JSON true/false as an NSNumber whose objCType is "c" (char); JSON
    /// integers come back as "i"/"q". `is Bool` cannot tell them apart (1 bridges to true).
    private static func isBool(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    private static func jsonTypeName(_ value: Any) -> String {
        if isBool(value) { return "a boolean" }
        if value is NSNull { return "null" }
        if value is String { return "a string" }
        if value is NSNumber { return "a number" }
        if value is [Any] { return "an array" }
        if value is [String: Any] { return "an object" }
        return "\(type(of: value))"
    }

    private static func shortError(_ error: Error) -> String {
        // Foundation's description repeats the domain and code; the debug text says where.
        let text = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
        return text.count > 160 ? String(text.prefix(160)) + "…" : text
    }
}
