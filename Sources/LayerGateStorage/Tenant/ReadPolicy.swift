/// How a read may get its blocks. Set for the duration of a cached-only
/// read (`Tenant.getPageFromCache`): every block lookup then fails with
/// `StorageError.notCached` instead of reading the disk, so the read can run
/// on a thread that must never block (the server's event loop).
enum ReadMode {
    @TaskLocal static var cachedOnly = false
}
