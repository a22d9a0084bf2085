import Foundation
import XCTest
@testable import StreamRecText

final class SafeTensorsTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A file with a hand-written header and raw data bytes.
    func file(header: String, data: [UInt8] = [], name: String = "t.safetensors", headerLength: UInt64? = nil) throws -> URL {
        var bytes: [UInt8] = []
        let json = Array(header.utf8)
        var length = (headerLength ?? UInt64(json.count)).littleEndian
        withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
        bytes += json + data
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    func assertRefused(_ url: URL, _ code: TextModelError.Code, mentioning words: [String],
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafeTensors(contentsOf: url), file: file, line: line) { error in
            guard let error = error as? TextModelError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            for word in words {
                XCTAssertTrue(error.message.contains(word), "\(error) should mention \(word)", file: file, line: line)
            }
        }
    }

    func testRoundTripOfWrittenFile() throws {
        let url = directory.appendingPathComponent("model.safetensors")
        try SafeTensors.write([("a.weight", [2, 3], [1, 2, 3, 4, 5, 6]), ("a.bias", [3], [-1, 0.5, 7]), ("empty", [0], [])],
                              metadata: ["format": "pt"], to: url)
        let tensors = try SafeTensors(contentsOf: url)
        XCTAssertEqual(tensors.names, ["a.bias", "a.weight", "empty"])
        XCTAssertEqual(tensors.metadata, ["format": "pt"])
        XCTAssertEqual(try tensors.info("a.weight").shape, [2, 3])
        XCTAssertEqual(try tensors.floats("a.weight", shape: [2, 3]), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try tensors.floats("a.bias"), [-1, 0.5, 7])
        XCTAssertEqual(try tensors.floats("empty"), [])
        XCTAssertThrowsError(try tensors.floats("a.weight", shape: [3, 2])) {
            XCTAssertEqual(($0 as? TextModelError)?.code, .shapeMismatch)
        }
        XCTAssertThrowsError(try tensors.floats("absent")) {
            XCTAssertEqual(($0 as? TextModelError)?.code, .shapeMismatch)
            XCTAssertTrue("\($0)".contains("absent"))
        }
        // The data region starts on an 8-byte boundary, as the reference writer keeps it.
        let data = try Data(contentsOf: url)
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual((8 + headerLength) % 8, 0)
    }

    func testHalfAndBFloat16AreWidened() throws {
        // F16: 1, -2, 0.5, 65504, smallest subnormal, -0. BF16: 1, -3.
        let half: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8000]
        let brain: [UInt16] = [0x3F80, 0xC040]
        var data: [UInt8] = []
        for v in half + brain { data += [UInt8(v & 0xFF), UInt8(v >> 8)] }
        let url = try file(header: #"{"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[12,16]},"i":{"dtype":"I64","shape":[0],"data_offsets":[16,16]}}"#, data: data)
        let tensors = try SafeTensors(contentsOf: url)
        let h = try tensors.floats("h")
        XCTAssertEqual(Array(h[0..<4]), [1, -2, 0.5, 65504])
        XCTAssertEqual(h[4], 5.9604645e-8, accuracy: 1e-12)
        XCTAssertEqual(h[5].sign, .minus)
        XCTAssertEqual(try tensors.floats("b"), [1, -3])
        XCTAssertThrowsError(try tensors.floats("i")) { XCTAssertEqual(($0 as? TextModelError)?.code, .unsupported) }
    }

    func testCorruptFilesAreRefusedWithClearErrors() throws {
        let four: [UInt8] = [0, 0, 128, 63]  // 1.0
        assertRefused(try file(header: "{}", name: "a", headerLength: 1 << 40), .badFile,
                      mentioning: ["header length", "make setup"])
        assertRefused(try file(header: "{\"x\": [1,", data: four, name: "b"), .badFile, mentioning: ["not JSON"])
        assertRefused(try file(header: "[1, 2]", name: "c"), .badFile, mentioning: ["not a JSON object"])
        assertRefused(try file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: four, name: "d"),
                      .badFile, mentioning: ["w", "data_offsets"])
        assertRefused(try file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: four, name: "e"),
                      .badFile, mentioning: ["w", "8 bytes"])
        assertRefused(try file(header: #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, data: four, name: "f"),
                      .badFile, mentioning: ["shape"])
        assertRefused(try file(header: #"{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#, data: four, name: "g"),
                      .unsupported, mentioning: ["F8_E4M3", "F32"])
        assertRefused(try file(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: four, name: "h"),
                      .badFile, mentioning: ["data_offsets"])
        let short = directory.appendingPathComponent("short")
        try Data([1, 2, 3]).write(to: short)
        assertRefused(short, .badFile, mentioning: ["8-byte"])
        assertRefused(directory.appendingPathComponent("absent.safetensors"), .missingFile, mentioning: ["make setup"])
    }
}
