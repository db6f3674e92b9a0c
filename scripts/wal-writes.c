/* How fast can a WAL commit be made durable on this disk? Appends CHUNK-byte
 * commits to a new file, each followed by fsync, in four ways: through the
 * page cache or with O_DIRECT, into a growing file or into one filled with
 * zeros beforehand. Prints MiB/s and ms per commit. Run by
 * scripts/bench-wal-writes.sh. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int run(const char *path, size_t chunk, size_t total, int direct, int prefilled) {
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT | (direct ? O_DIRECT : 0), 0600);
    if (fd < 0) { perror("open"); return 1; }
    void *buf;
    if (posix_memalign(&buf, 4096, chunk < (1 << 20) ? 1 << 20 : chunk)) return 1;
    if (prefilled) {
        memset(buf, 0, 1 << 20);
        for (size_t off = 0; off < total; off += 1 << 20)
            if (pwrite(fd, buf, 1 << 20, off) != 1 << 20) { perror("prefill"); return 1; }
        fsync(fd);
    }
    memset(buf, 7, chunk);
    double start = now(), worst = 0;
    size_t n = 0;
    for (size_t off = 0; off + chunk <= total; off += chunk, n++) {
        double t = now();
        if (pwrite(fd, buf, chunk, off) != (ssize_t)chunk) { perror("pwrite"); return 1; }
        if (fsync(fd) != 0) { perror("fsync"); return 1; }
        if (now() - t > worst) worst = now() - t;
    }
    double took = now() - start;
    printf("%-9s %-26s %6zu KiB commits: %6.0f MiB/s, %5.2f ms a commit (worst %.2f)\n",
           direct ? "O_DIRECT" : "buffered", prefilled ? "into a zero-filled file" : "appending to a new file",
           chunk / 1024, total / 1048576.0 / took, took * 1000 / n, worst * 1000);
    close(fd);
    unlink(path);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: wal-writes FILE CHUNK_KIB [TOTAL_MIB]\n"); return 2; }
    size_t chunk = (size_t)atoi(argv[2]) * 1024, total = (size_t)(argc > 3 ? atoi(argv[3]) : 512) << 20;
    if (chunk == 0 || chunk % 4096) { fprintf(stderr, "CHUNK_KIB must be a multiple of 4\n"); return 2; }
    for (int direct = 0; direct < 2; direct++)
        for (int prefilled = 0; prefilled < 2; prefilled++)
            if (run(argv[1], chunk, total, direct, prefilled)) return 1;
    return 0;
}
