import LayerGateStorage
import LayerGateWire
import Testing

@testable import LayerGateServer

/// The code a client branches on for each way remote storage fails: whose
/// fault it is decides whether a retry can help.
@Suite struct ErrorMappingTests {
    let tenant = TenantId(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210)

    @Test func remoteFailuresAnswerWithWhoseFaultTheyAre() {
        let cases: [(RemoteError, Wire.ErrorCode)] = [
            (.unavailable(operation: "GET", key: "k", reason: "refused"), .tenantUnavailable),
            (.exhausted(operation: "download", key: "k", reason: "EMFILE"), .resourceExhausted),
            (.localIO(operation: "download", key: "k", reason: "EIO"), .internal),
            (.conflict(key: "k", reason: "other bytes"), .layerExists),
            (.corruptIndex(key: "k", reason: "bad"), .internal),
            (.badConfiguration("no bucket"), .invalidArgument),
        ]
        for (remote, code) in cases {
            let wire = ErrorMapping.wire(.remote(tenant, remote))
            #expect(wire.code == code, "\(remote)")
            #expect(wire.message.contains(tenant.description), "\(wire.message)")
        }
    }
}
