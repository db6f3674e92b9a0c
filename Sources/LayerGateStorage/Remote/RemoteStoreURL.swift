/// The store a `--remote-storage` URL names.
public enum RemoteStoreURL {
    /// `endpoint` and `region` apply to s3:// (`--s3-endpoint`, `--s3-region`);
    /// its credentials come from `environment`.
    public static func open(_ url: String, endpoint: String? = nil, region: String = "us-east-1",
                            environment: [String: String] = [:]) throws(RemoteError) -> any RemoteStore {
        if url.hasPrefix("file://") {
            let path = String(url.dropFirst("file://".count))
            guard path.hasPrefix("/"), path.count > 1 else {
                throw .badConfiguration("'\(StorageError.printable(url))': a file URL needs an absolute directory, as in file:///srv/layers")
            }
            return try FileRemoteStore(directory: path)
        }
        if url.hasPrefix("s3://") {
            let path = url.dropFirst("s3://".count)
            let bucket = path.prefix { $0 != "/" }
            return try S3RemoteStore(bucket: String(bucket), prefix: String(path.dropFirst(bucket.count)), endpoint: endpoint,
                                     region: region, credentials: try .fromEnvironment(environment))
        }
        throw .badConfiguration("'\(StorageError.printable(url))' is neither file:///DIR nor s3://BUCKET/PREFIX")
    }
}
