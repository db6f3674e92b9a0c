import Logging
import Synchronization

/// Tells the operator about requests answered INTERNAL: stored data that
/// failed its checks (a layer, index or WAL), an I/O error, a bug. A client
/// only sees the error; without this line a failing disk showed nowhere in
/// the server's log (an outside run damaged layer files: every read of them
/// failed correctly, and the log said nothing at any level). At most one line
/// a second, with how many were left out since the last one, so a client that
/// keeps asking for a damaged page cannot flood the log.
final class DamageLog: Sendable {
    private struct State {
        var quietUntil: ContinuousClock.Instant?
        var leftOut = 0
    }

    private let logger: Logger
    private let state = Mutex(State())
    static let interval = Duration.seconds(1)

    init(logger: Logger) {
        self.logger = logger
    }

    /// `message` is the client's (tenant and layer, no paths).
    func note(_ message: String) {
        let now = ContinuousClock.now
        let leftOut: Int? = state.withLock { s in
            if let until = s.quietUntil, now < until {
                s.leftOut += 1
                return nil
            }
            let leftOut = s.leftOut
            s = State(quietUntil: now + Self.interval, leftOut: 0)
            return leftOut
        }
        guard let leftOut else { return }
        var metadata: Logger.Metadata = ["error": "\(message)"]
        if leftOut > 0 { metadata["not_logged_since_last"] = "\(leftOut)" }
        logger.warning("a request was answered INTERNAL (damaged stored data, an I/O error or a bug)", metadata: metadata)
    }
}
