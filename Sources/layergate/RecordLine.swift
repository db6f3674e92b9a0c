import Foundation
import LayerGateWire

/// One line of `layergate put --file`: a page record as JSON, with the
/// proto's field names and bytes in base64 (which `JSONDecoder` decodes into
/// `Data` itself). Numbers out of their field's range are refused by the decoder.
struct RecordLine: Decodable {
    struct Key: Decodable {
        var spcOid, dbOid, relNumber, fork, block: Unsigned<UInt32>
    }

    struct Patch: Decodable {
        var offset: Unsigned<UInt32>
        var data: Data
    }

    /// An unsigned field whose out-of-range value is named in the error
    /// (Foundation's decoder reports "not valid JSON" for `-1` into a `UInt32`).
    struct Unsigned<T: FixedWidthInteger & UnsignedInteger & Decodable>: Decodable {
        var value: T

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let v = try? c.decode(T.self) {
                value = v
            } else if let v = try? c.decode(Double.self) {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "\(v) is not a u\(T.bitWidth)")
            } else {
                throw DecodingError.typeMismatch(T.self, .init(codingPath: c.codingPath, debugDescription: "not a number"))
            }
        }
    }

    struct Delta: Decodable {
        var willInit: Bool?
        var patches: [Patch]?
    }

    var key: Key
    var lsn: Unsigned<UInt64>
    var image: Data?
    var delta: Delta?

    /// Line `n` of the input as a record, or an error that names the line and the field.
    static func parse(_ line: Substring, line n: Int) throws -> Wire.Record {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let r: RecordLine
        do { r = try decoder.decode(RecordLine.self, from: Data(line.utf8)) } catch let e as DecodingError {
            throw CLIError("line \(n): \(Self.explain(e))")
        }
        let k = r.key
        let key = Wire.PageKey(spcOid: k.spcOid.value, dbOid: k.dbOid.value, relNumber: k.relNumber.value,
                               fork: k.fork.value, block: k.block.value)
        let lsn = r.lsn.value
        switch (r.image, r.delta) {
        case (let image?, nil):
            return Wire.Record(key: key, lsn: lsn, value: .image(Array(image)))
        case (nil, let d?):
            let patches = (d.patches ?? []).map { Wire.Patch(offset: $0.offset.value, data: Array($0.data)) }
            return Wire.Record(key: key, lsn: lsn, value: .delta(Wire.DeltaRecord(willInit: d.willInit ?? false, patches: patches)))
        case (nil, nil):
            throw CLIError("line \(n): needs \"image\" or \"delta\"")
        case (.some, .some):
            throw CLIError("line \(n): has both \"image\" and \"delta\"; a record is one or the other")
        }
    }

    private static func explain(_ e: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\(snake($0.stringValue))" }.joined()
            return p.isEmpty ? "" : String(p.drop { $0 == "." }) + ": "
        }
        switch e {
        case .keyNotFound(let k, let c): return "\(path(c))missing \"\(snake(k.stringValue))\""
        case .typeMismatch(let t, let c): return "\(path(c))expected \(name(t))"
        case .valueNotFound(let t, let c): return "\(path(c))expected \(name(t)), found null"
        case .dataCorrupted(let c):
            let why = c.debugDescription.hasSuffix(".") ? String(c.debugDescription.dropLast()) : c.debugDescription
            return c.codingPath.isEmpty ? "not a JSON record (\(why))" : "\(path(c))\(why)"
        @unknown default: return "\(e)"
        }
    }

    private static func name(_ t: Any.Type) -> String {
        switch t {
        case is UInt32.Type, is Unsigned<UInt32>.Type: return "a u32"
        case is UInt64.Type, is Unsigned<UInt64>.Type: return "a u64"
        case is Data.Type: return "base64 bytes"
        case is Bool.Type: return "true or false"
        case is [String: Any].Type: return "a JSON object"
        case is [Any].Type: return "a JSON array"
        default: return "\(t)"
        }
    }

    private static func snake(_ s: String) -> String {
        s.reduce(into: "") { out, c in out += c.isUppercase ? "_" + c.lowercased() : String(c) }
    }
}
