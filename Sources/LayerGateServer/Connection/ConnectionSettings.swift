import Logging

/// What every connection of one server shares: the dispatcher, the limits,
/// the budgets and the in-flight count. Made once by the server and handed to
/// whichever loop serves the socket, which makes each `Connection` from it.
struct ConnectionSettings: Sendable {
    var dispatcher: Dispatcher
    var limits: ServerLimits
    var maxFrameBytes: Int
    var budgets: InflightBudgets
    var tracker: InFlightTracker
    var logger: Logger
}
