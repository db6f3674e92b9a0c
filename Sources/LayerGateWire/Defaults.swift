/// Where a server listens and keeps its data when nobody says otherwise:
/// `layergated`, its configuration and every client tool start from these.
public enum Defaults {
    /// Relative to the working directory, like `make run`'s.
    public static let socketPath = "./.layergate/layergate.sock"
    public static let dataDirectory = "./.layergate/data"
}
