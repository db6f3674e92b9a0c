extension Duration {
    /// Whole nanoseconds, clamped to Int64: a timeout of `.seconds(.max)` means
    /// "as long as can be", not a trap.
    var clampedNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = ns.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? .max : sum
    }

    var clampedMilliseconds: Int64 { clampedNanoseconds / 1_000_000 }
}
