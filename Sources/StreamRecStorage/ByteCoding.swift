// Little-endian fixed-width integers and key helpers shared by the session and vocabulary
// encodings. Written by hand (not via withUnsafeBytes) so decoding never trusts alignment.

extension Array where Element == UInt8 {
    mutating func appendLittleEndian(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func appendLittleEndian(_ value: Int64) {
        let bits = UInt64(bitPattern: value)
        for shift in stride(from: 0, to: 64, by: 8) { append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
    }
}

/// Sequential reader over a byte array; every read reports running off the end with nil
/// so callers can turn that into a .corrupt error naming their key.
struct ByteReader {
    private let bytes: [UInt8]
    private(set) var position: Int

    init(_ bytes: [UInt8], position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var remaining: Int { bytes.count - position }

    mutating func readUInt8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func readUInt32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        var value: UInt32 = 0
        for i in 0..<4 { value |= UInt32(bytes[position + i]) << UInt32(8 * i) }
        position += 4
        return value
    }

    mutating func readBytes(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, remaining >= count else { return nil }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    mutating func readInt64() -> Int64? {
        guard remaining >= 8 else { return nil }
        var value: UInt64 = 0
        for i in 0..<8 { value |= UInt64(bytes[position + i]) << UInt64(8 * i) }
        position += 8
        return Int64(bitPattern: value)
    }
}

enum KeyFormat {
    /// Fixed-width decimal so that bytewise key order equals numeric order.
    static func padded10(_ value: UInt64) -> String {
        let digits = String(value)
        return String(repeating: "0", count: Swift.max(0, 10 - digits.count)) + digits
    }

    /// Parses exactly ten ASCII digits; nil for anything else.
    static func parsePadded10<C: Collection>(_ bytes: C) -> UInt64? where C.Element == UInt8 {
        guard bytes.count == 10 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// Strict UTF-8 decoding: nil if the bytes are not exactly a valid encoding.
    static func utf8String<C: Collection>(_ bytes: C) -> String? where C.Element == UInt8 {
        let string = String(decoding: bytes, as: UTF8.self)
        // String(decoding:) repairs invalid sequences; a repaired string re-encodes differently.
        return string.utf8.elementsEqual(bytes) ? string : nil
    }

    /// Human-readable rendering of a key for error messages.
    static func describe(_ key: [UInt8]) -> String {
        utf8String(key) ?? key.map { String($0, radix: 16) }.joined(separator: " ")
    }
}
