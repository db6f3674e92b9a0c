#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Named points in the storage code where a test or operator can inject a
/// failure. Compiled in always; inert until `enable` is called (the server's
/// `--enable-failpoints`), and free when nothing is configured.
public final class Failpoints: Sendable {
    public enum Action: Equatable, Sendable, CustomStringConvertible {
        case off
        /// Fail with an error, as a full disk would.
        case `return`
        /// Die at once, as in a crash.
        case exit
        case sleep(milliseconds: Int)
        /// Block until the failpoint is set to something else.
        case pause

        public init(parsing text: String) throws(StorageError) {
            switch text {
            case "off": self = .off
            case "return": self = .return
            case "exit": self = .exit
            case "pause": self = .pause
            default:
                if text.hasPrefix("sleep("), text.hasSuffix(")"),
                   let ms = Int(text.dropFirst(6).dropLast()), ms >= 0, ms <= 3_600_000 {
                    self = .sleep(milliseconds: ms)
                } else {
                    throw .invalidArgument("unknown failpoint action '\(text)'")
                }
            }
        }

        public var description: String {
            switch self {
            case .off: return "off"
            case .return: return "return"
            case .exit: return "exit"
            case .pause: return "pause"
            case .sleep(let ms): return "sleep(\(ms))"
            }
        }
    }

    /// Every failpoint the code passes through; setting another name is an error.
    public static let known: Set<String> = [
        "layer-writer-put-value",
        "layer-writer-before-finish",
        "layer-writer-before-publish",
        "after-layer-publish-before-index",
        "index-before-rename",
        "flush-before-index",
        "flush-after-index-before-wal-truncate",
        "wal-before-fsync",
        // Hit for each value written after the first compaction output is published.
        "compaction-after-first-output",
        // `return` here makes the WAL's fsync report EIO: the process must stop.
        "wal-fsync-error",
        // Remote storage: after each layer object is stored, before the remote
        // index that lists them; and before each layer object is deleted.
        "remote-after-layer-upload",
        "remote-before-delete",
        // A layer downloaded into its temp file, before it is checked and published.
        "remote-download-before-publish",
        // Published, before it is opened.
        "remote-download-after-publish",
        // Before the name such a failed open left is removed (its layer left the map, or an eviction).
        "remote-leftover-before-unlink",
        // The filesystem itself (FailpointFileSystem): a full disk, no descriptors.
        "disk-full",
        "no-descriptors",
    ]

    public static let shared = Failpoints()
    /// Never enabled: for writes that must not stop at a failpoint of another write.
    static let none = Failpoints()

    private struct State {
        var enabled = false
        var actions: [String: Action] = [:]
        var pausedGeneration = 0
    }

    private let state = Mutex(State())
    private let anyActive = Atomic<Bool>(false)

    public init() {}

    /// True once `enable` was called (the server's `--enable-failpoints`).
    public var isEnabled: Bool { state.withLock { $0.enabled } }

    /// Turns failpoints on and applies `LAYERGATE_FAILPOINTS` ("a=exit;b=return").
    public func enable(environment: String? = ProcessEnvironment.get("LAYERGATE_FAILPOINTS")) throws(StorageError) {
        state.withLock { $0.enabled = true }
        guard let environment, !environment.isEmpty else { return }
        for item in environment.split(separator: ";") where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { throw .invalidArgument("LAYERGATE_FAILPOINTS: '\(item)' is not name=action") }
            try configure(String(parts[0]), Action(parsing: String(parts[1])))
        }
    }

    public func configure(_ name: String, _ action: Action) throws(StorageError) {
        guard Self.known.contains(name) else { throw .invalidArgument("unknown failpoint '\(name)'") }
        let ok = state.withLock { s -> Bool in
            guard s.enabled else { return false }
            if action == .off { s.actions[name] = nil } else { s.actions[name] = action }
            s.pausedGeneration += 1
            anyActive.store(!s.actions.isEmpty, ordering: .releasing)
            return true
        }
        guard ok else { throw .invalidArgument("failpoints are not enabled") }
    }

    /// Called at a failpoint. Blocks the calling thread for `sleep` and `pause`,
    /// so only call it where blocking is acceptable (I/O threads).
    public func hit(_ name: String) throws(StorageError) {
        guard anyActive.load(ordering: .acquiring) else { return }
        var pauseGeneration: Int?
        while true {
            let action = state.withLock { s -> Action in
                if let g = pauseGeneration, g == s.pausedGeneration { return .pause }
                pauseGeneration = nil
                return s.actions[name] ?? .off
            }
            switch action {
            case .off: return
            case .return: throw .failpoint(name)
            case .exit:
                StandardError.write("layergate: failpoint \(name): exit\n")
                _exit(99)
            case .sleep(let ms):
                usleep(useconds_t(ms) * 1000)
                return
            case .pause:
                if pauseGeneration == nil { pauseGeneration = state.withLock { $0.pausedGeneration } }
                usleep(2_000)
            }
        }
    }
}

enum StandardError {
    static func write(_ text: String) {
        var t = text
        t.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

public enum ProcessEnvironment {
    public static func get(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        return String(cString: v)
    }
}
