import Testing

@testable import LayerGateStorage

/// How files are named in messages: by tenant and role, never by the data
/// directory's path, and a name not yet published by what it will be.
@Suite("File labels in messages")
struct FileLabelTests {
    @Test func filesAreNamedByTenantAndRole() {
        let t = "/srv/data/tenants/0123456789abcdef0123456789abcdef"
        let layer = "0000067f00000005000003e80000000000-0000067f00000005000003e8000000ffff__0000000000000001-0000000000010000-g00000001"
        #expect(FileLabel.describe(t) == "tenant 0123456789abcdef0123456789abcdef")
        #expect(FileLabel.describe(t + "/index.json") == "tenant 0123456789abcdef0123456789abcdef, index.json")
        #expect(FileLabel.describe(t + "/wal/0000000000000001.wal") == "tenant 0123456789abcdef0123456789abcdef, WAL segment 0000000000000001.wal")
        #expect(FileLabel.describe(t + "/" + layer) == "tenant 0123456789abcdef0123456789abcdef, layer \(layer)")
        #expect(FileLabel.describe("/srv/data/some.lock") == "some.lock")
    }

    @Test func unpublishedNamesSayWhatTheyWillBe() {
        let t = "/srv/data/tenants/0123456789abcdef0123456789abcdef"
        #expect(FileLabel.describe(t + ".___temp/index.json.___temp")
                == "tenant 0123456789abcdef0123456789abcdef (being created), index.json (being written)")
        #expect(FileLabel.describe(t + "/layer-2206-2.___temp") == "tenant 0123456789abcdef0123456789abcdef, a new layer (being written)")
        #expect(FileLabel.describe(t + "/index.json.___temp") == "tenant 0123456789abcdef0123456789abcdef, index.json (being written)")
        #expect(!FileLabel.describe(t + "/x.download-3.___temp").contains("___temp"))
    }
}
