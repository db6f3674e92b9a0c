import Testing

@testable import LayerGateStorage

/// The one wait primitive: reached, timed out (each at its own deadline,
/// from one shared timer), cancelled, failed, capped.
@Suite("SeqWait")
struct SeqWaitTests {
    @Test func eachWaitTimesOutAtItsOwnDeadline() async {
        let w = SeqWait(5)
        let start = ContinuousClock.now
        // A later deadline first, then an earlier one: the timer moves forward.
        async let long = w.wait(for: 10, timeout: .milliseconds(400))
        try? await Task.sleep(for: .milliseconds(20))
        async let short = w.wait(for: 10, timeout: .milliseconds(50))
        async let middle = w.wait(for: 10, timeout: .milliseconds(200))
        #expect(await short == .timedOut(current: 5))
        let shortAt = ContinuousClock.now - start
        #expect(await middle == .timedOut(current: 5))
        let middleAt = ContinuousClock.now - start
        #expect(await long == .timedOut(current: 5))
        let longAt = ContinuousClock.now - start
        // Never before its deadline (an upper bound would only measure the machine's load).
        #expect(shortAt >= .milliseconds(70) && middleAt >= .milliseconds(220) && longAt >= .milliseconds(400),
                "\(shortAt) \(middleAt) \(longAt)")
        #expect(w.waiterCount == 0)
    }

    @Test func reachedCancelledAndFailedWaitsLeaveNothing() async {
        let w = SeqWait(0, maxWaiters: 2, overflow: .resourceExhausted("full"))
        async let reached = w.wait(for: 3, timeout: .seconds(30))
        let cancelled = Task { await w.wait(for: 9, timeout: .seconds(30)) }
        while w.waiterCount < 2 { try? await Task.sleep(for: .milliseconds(1)) }
        #expect(await w.wait(for: 9, timeout: .seconds(30)) == .failed(.resourceExhausted("full")))
        w.advance(to: 3)
        #expect(await reached == .reached)
        cancelled.cancel()
        #expect(await cancelled.value == .failed(.cancelled("the waiting request went away")))
        #expect(w.waiterCount == 0)
        async let failed = w.wait(for: 20, timeout: .seconds(30))
        while w.waiterCount < 1 { try? await Task.sleep(for: .milliseconds(1)) }
        w.failAll(.tenantUnavailable(testTenant, state: "resetting"))
        #expect(await failed == .failed(.tenantUnavailable(testTenant, state: "resetting")))
        #expect(w.waiterCount == 0)
    }

    /// Thousands of waits that are cancelled: none is left, and a wait
    /// after them still times out on time.
    @Test func manyCancelledWaits() async {
        let w = SeqWait(0)
        let tasks = (0..<2000).map { i in Task { await w.wait(for: UInt64(100 + i), timeout: .seconds(60)) } }
        while w.waiterCount < 2000 { try? await Task.sleep(for: .milliseconds(1)) }
        for t in tasks { t.cancel() }
        for t in tasks { _ = await t.value }
        #expect(w.waiterCount == 0)
        let start = ContinuousClock.now
        #expect(await w.wait(for: 1, timeout: .milliseconds(100)) == .timedOut(current: 0))
        #expect(ContinuousClock.now - start < .seconds(5))
    }
}
