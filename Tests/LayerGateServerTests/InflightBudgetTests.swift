import Synchronization
import Testing

@testable import LayerGateServer

/// The in-flight budget's queue: bytes given back go to the waiters in the
/// order they asked, never to a newcomer before them.
@Suite("in-flight budget: first come, first served")
struct InflightBudgetTests {
    /// What the waiters were granted, in order.
    final class Grants: Sendable {
        private let order = Mutex<[String]>([])
        var names: [String] { order.withLock { $0 } }
        func callback(_ name: String) -> @Sendable () -> Void { { self.order.withLock { $0.append(name) } } }
    }

    @Test func bytesGivenBackGoToTheWaitersInTheOrderTheyAsked() {
        let budget = InflightBudget(capacity: 100)
        let grants = Grants()
        #expect(budget.reserve(60, granted: grants.callback("first")) == .reserved)
        #expect(budget.reserve(60, granted: grants.callback("a")) == .queued(ticket: 0))
        #expect(budget.reserve(30, granted: grants.callback("b")) == .queued(ticket: 1))
        // It would fit, but two wait before it.
        #expect(budget.reserve(10, granted: grants.callback("c")) == .queued(ticket: 2))
        #expect(budget.used == 60)
        budget.release(60)
        #expect(grants.names == ["a", "b", "c"] && budget.used == 100)
        budget.release(60)
        budget.release(30)
        budget.release(10)
        #expect(budget.used == 0)
    }

    @Test func theHeadWaitsForRoomAndThoseBehindItWaitToo() {
        let budget = InflightBudget(capacity: 100)
        let grants = Grants()
        #expect(budget.reserve(50, granted: grants.callback("first")) == .reserved)
        #expect(budget.reserve(80, granted: grants.callback("big")) == .queued(ticket: 0))
        #expect(budget.reserve(20, granted: grants.callback("small")) == .queued(ticket: 1))
        budget.release(50)
        #expect(grants.names == ["big", "small"] && budget.used == 100)
    }

    @Test func aCancelledWaiterLeavesRoomForTheOnesBehindIt() {
        let budget = InflightBudget(capacity: 100)
        let grants = Grants()
        #expect(budget.reserve(40, granted: grants.callback("first")) == .reserved)
        guard case .queued(let gone) = budget.reserve(90, granted: grants.callback("gone")) else {
            Issue.record("a frame that does not fit was let in")
            return
        }
        #expect(budget.reserve(50, granted: grants.callback("next")) != .reserved)
        budget.cancel(gone)
        #expect(grants.names == ["next"] && budget.used == 90)
        budget.cancel(gone)  // twice, or after its grant: nothing happens
        #expect(budget.used == 90)
    }

    @Test func aFrameLargerThanTheBudgetPassesAloneWhenNothingIsReserved() {
        let budget = InflightBudget(capacity: 100)
        let grants = Grants()
        #expect(budget.reserve(500, granted: grants.callback("huge")) == .reserved)
        #expect(budget.reserve(500, granted: grants.callback("second")) == .queued(ticket: 0))
        #expect(budget.reserve(1, granted: grants.callback("tiny")) == .queued(ticket: 1))
        budget.release(500)
        // The second huge one alone; the tiny one waits for it.
        #expect(grants.names == ["second"] && budget.used == 500)
        budget.release(500)
        #expect(grants.names == ["second", "tiny"] && budget.used == 1)
    }
}
