import Foundation

/// A read-only .safetensors file.
///
/// Layout: 8 bytes little-endian header length N, then N bytes of UTF-8 JSON, then the data
/// region. The JSON maps each tensor name to `{"dtype": "F32", "shape": [..], "data_offsets":
/// [begin, end]}` (offsets relative to the start of the data region) and may hold a
/// `"__metadata__"` object of string to string. Every tensor's byte range is checked against its
/// shape and the file's length when the file is opened, so a truncated or corrupt file is refused
/// up front with a `TextModelError(.badFile, ...)` rather than read out of bounds later.
///
/// Floats are served as `Float` whatever the stored dtype: F32 as is, F16 and BF16 widened,
/// F64 narrowed. Integer tensors (e.g. BERT's `position_ids`) are listed but not converted.
public struct SafeTensors: Sendable {
    public enum DType: String, Sendable, CaseIterable {
        case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
        case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

        public var byteSize: Int {
            switch self {
            case .f64, .i64: 8
            case .f32, .i32: 4
            case .f16, .bf16, .i16: 2
            case .i8, .u8, .bool: 1
            }
        }

        public var isFloatingPoint: Bool { [.f64, .f32, .f16, .bf16].contains(self) }
    }

    public struct TensorInfo: Sendable, Equatable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range inside the data region.
        public let dataOffsets: Range<Int>
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// Where the tensors came from, for messages.
    public let source: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]
    private let bytes: Data
    private let dataStart: Int

    /// The largest header accepted: the format's own limit (100 MB) keeps a corrupt length from
    /// allocating gigabytes.
    public static let maxHeaderBytes = 100_000_000

    public init(contentsOf url: URL) throws {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw TextModelError(.missingFile, "no safetensors file at \(url.path); run `make setup` "
                + "(ops/fetch-minilm.sh) or pass the folder that holds model.safetensors")
        }
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw TextModelError(.missingFile, "cannot read \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: data, source: url.path)
    }

    public init(data: Data, source: String = "safetensors data") throws {
        func bad(_ why: String) -> TextModelError {
            TextModelError(.badFile, "\(source) is not a valid safetensors file: \(why); fetch it "
                + "again (remove the model folder and run `make setup`)")
        }
        guard data.count >= 8 else { throw bad("\(data.count) bytes, shorter than the 8-byte header length") }
        var headerLength: UInt64 = 0
        for i in 0..<8 {
            headerLength |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i))
        }
        guard headerLength >= 2, headerLength <= UInt64(Self.maxHeaderBytes),
              headerLength <= UInt64(data.count - 8) else {
            throw bad("header length \(headerLength) does not fit a file of \(data.count) bytes")
        }
        let headerStart = data.startIndex + 8
        let headerData = data.subdata(in: headerStart..<(headerStart + Int(headerLength)))
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw bad("header is not JSON")
        }
        guard let header = json as? [String: Any] else { throw bad("header is not a JSON object") }

        let dataStart = 8 + Int(headerLength)
        let dataLength = data.count - dataStart
        var tensors: [String: TensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let entries = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (key, entry) in entries {
                    guard let text = entry as? String else { throw bad("__metadata__.\(key) is not a string") }
                    metadata[key] = text
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw bad("entry \(name) is not an object") }
            guard let dtypeName = entry["dtype"] as? String else { throw bad("tensor \(name) has no dtype") }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw TextModelError(.unsupported, "\(source): tensor \(name) has dtype \(dtypeName); "
                    + "supported: \(DType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let shape = Self.integers(entry["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                throw bad("tensor \(name) has no valid shape")
            }
            guard let offsets = Self.integers(entry["data_offsets"]), offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataLength else {
                throw bad("tensor \(name) has data_offsets outside the \(dataLength)-byte data region")
            }
            var count = 1
            for dimension in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw bad("tensor \(name) has an overflowing shape \(shape)") }
                count = product
            }
            guard offsets[1] - offsets[0] == count * dtype.byteSize else {
                throw bad("tensor \(name) (\(dtypeName) \(shape)) needs \(count * dtype.byteSize) bytes "
                    + "but data_offsets span \(offsets[1] - offsets[0])")
            }
            tensors[name] = TensorInfo(name: name, dtype: dtype, shape: shape,
                                       dataOffsets: offsets[0]..<offsets[1])
        }
        self.source = source
        self.tensors = tensors
        self.metadata = metadata
        self.bytes = data
        self.dataStart = dataStart
    }

    /// JSON numbers arrive as Int, Int64 or NSNumber depending on the platform.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var result: [Int] = []
        result.reserveCapacity(array.count)
        for element in array {
            if let number = element as? Int {
                result.append(number)
            } else if let number = element as? NSNumber, number.doubleValue == number.doubleValue.rounded(),
                      abs(number.doubleValue) < 9.0e15 {
                result.append(number.intValue)
            } else {
                return nil
            }
        }
        return result
    }

    public var names: [String] { tensors.keys.sorted() }

    public func info(_ name: String) throws -> TensorInfo {
        guard let info = tensors[name] else {
            throw TextModelError(.shapeMismatch, "\(source) has no tensor \(name); is this the right "
                + "model family? (it holds \(tensors.count) tensors, e.g. \(names.prefix(3).joined(separator: ", ")))")
        }
        return info
    }

    /// Copies tensor `name` as Float into `destination`, which must hold exactly its elements.
    public func copyFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        let info = try info(name)
        guard info.dtype.isFloatingPoint else {
            throw TextModelError(.unsupported, "\(source): tensor \(name) is \(info.dtype.rawValue), not floating point")
        }
        guard destination.count == info.elementCount else {
            throw TextModelError(.shapeMismatch, "\(source): tensor \(name) has \(info.elementCount) "
                + "elements (shape \(info.shape)), expected \(destination.count)")
        }
        let start = dataStart + info.dataOffsets.lowerBound
        bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let base = raw.baseAddress! + start
            let n = info.elementCount
            switch info.dtype {
            case .f32:
                UnsafeMutableRawPointer(destination.baseAddress!).copyMemory(from: base, byteCount: n * 4)
            case .f64:
                for i in 0..<n { destination[i] = Float(base.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            case .f16:
                for i in 0..<n { destination[i] = Self.halfToFloat(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .bf16:
                for i in 0..<n {
                    let bits = UInt32(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                    destination[i] = Float(bitPattern: bits)
                }
            default:
                break
            }
        }
        // The files are little-endian; so is every platform this builds for.
    }

    /// Tensor `name` as a Float array, checked against `shape` when given.
    public func floats(_ name: String, shape: [Int]? = nil) throws -> [Float] {
        let info = try info(name)
        if let shape, shape != info.shape {
            throw TextModelError(.shapeMismatch, "\(source): tensor \(name) has shape \(info.shape), expected \(shape)")
        }
        var result = [Float](repeating: 0, count: info.elementCount)
        try result.withUnsafeMutableBufferPointer { try copyFloats(name, into: $0) }
        return result
    }

    /// IEEE 754 binary16 to Float, by bits (Float16 is not available on every platform Swift targets).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int(h >> 10) & 0x1F
        var mantissa = UInt32(h & 0x03FF)
        if exponent == 0x1F {  // inf / NaN
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal: normalise.
            var e = -1
            repeat { mantissa <<= 1; e += 1 } while mantissa & 0x0400 == 0
            mantissa &= 0x03FF
            let bits = sign | UInt32(127 - 15 - e) << 23 | (mantissa << 13)
            return Float(bitPattern: bits)
        }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
    }

    /// Writes F32 tensors as a safetensors file (header padded to 8 bytes, as the reference
    /// writer does). Meant for tests and small exports.
    public static func write(_ tensors: [(name: String, shape: [Int], values: [Float])],
                             metadata: [String: String] = [:], to url: URL) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for tensor in tensors {
            let count = tensor.shape.reduce(1, *)
            guard count == tensor.values.count else {
                throw TextModelError(.shapeMismatch, "tensor \(tensor.name): shape \(tensor.shape) "
                    + "holds \(count) values, got \(tensor.values.count)")
            }
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, offset + 4 * count]]
            offset += 4 * count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        for tensor in tensors {
            tensor.values.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        try out.write(to: url, options: .atomic)
    }
}
