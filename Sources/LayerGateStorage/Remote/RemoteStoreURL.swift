/// The store a `--remote-storage` URL names.
public enum RemoteStoreURL {
    public static func open(_ url: String) throws(RemoteError) -> any RemoteStore {
        if url.hasPrefix("file://") {
            let path = String(url.dropFirst("file://".count))
            guard path.hasPrefix("/"), path.count > 1 else {
                throw .badConfiguration("'\(StorageError.printable(url))': a file URL needs an absolute directory, as in file:///srv/layers")
            }
            return try FileRemoteStore(directory: path)
        }
        if url.hasPrefix("s3://") {
            throw .badConfiguration("'\(StorageError.printable(url))': this build has no S3 client yet; use file:///DIR")
        }
        throw .badConfiguration("'\(StorageError.printable(url))' is neither file:///DIR nor s3://BUCKET/PREFIX")
    }
}
