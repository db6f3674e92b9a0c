import Foundation

/// A directory under the system's temp directory, removed with everything in
/// it when the value goes away: the one way tests make scratch space.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    /// `mode`: the directory's permission bits (mkdtemp makes it 0700).
    public init(_ label: String = "lg", mode: mode_t = 0o700) {
        var template = Array((NSTemporaryDirectory() + "layergate-\(label)-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed: errno \(errno)")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if mode != 0o700 { chmod(path, mode) }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Removes every directory made with `label`: the child process of an exit
    /// test dies before its own values are cleaned up, so its parent sweeps
    /// them. Use a label no other test uses.
    public static func removeAll(label: String) {
        let parent = NSTemporaryDirectory()
        let prefix = "layergate-\(label)-"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where name.hasPrefix(prefix) {
            try? FileManager.default.removeItem(atPath: parent + "/" + name)
        }
    }

    /// Entry names below `sub` (or the directory itself), in no particular order.
    public func files(_ sub: String = "") -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: sub.isEmpty ? path : path + "/" + sub)) ?? []
    }
}
