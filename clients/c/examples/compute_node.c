/*
 * How a compute node reads pages from LayerGate: a run of blocks of one
 * relation as of the LSN it has replayed to, fetched in one pipelined batch,
 * with the error handling a real caller needs. Copy read_blocks() and its
 * retry policy; the rest is command-line plumbing.
 *
 *   compute_node [--socket PATH] [--lsn N|latest] TENANT SPC DB REL FIRST_BLOCK COUNT
 *
 * Prints one line per block: its number and a checksum of its 8 KiB.
 * Build: cc compute_node.c $(pkg-config --cflags --libs layergate)
 */
#define _POSIX_C_SOURCE 200809L
#include <layergate.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_ATTEMPTS = 5, MAX_BLOCKS = 4096 };

static void pause_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Is it worth asking again, and does the connection need replacing first? */
static bool retryable(lg_status s, bool *reconnect) {
    switch (s) {
    case LG_LSN_NOT_AVAILABLE:   /* ingest has not reached our LSN yet */
    case LG_TENANT_UNAVAILABLE:  /* the tenant is being reset; it comes back */
        *reconnect = false;
        return true;
    case LG_TIMEOUT:             /* a read is idempotent: a fresh connection and the same request */
    case LG_CONNECTION_CLOSED:   /* the server restarted, or the connection broke */
    case LG_IO_ERROR:
    case LG_CONNECT_FAILED:
        *reconnect = true;
        return true;
    default:                     /* PAGE_NOT_FOUND, LSN_BELOW_GC_HORIZON, INVALID_ARGUMENT...: asking again won't help */
        return false;
    }
}

/*
 * Reads `count` blocks starting at `first` into pages[], as of `lsn`. On a
 * transient failure it reconnects or waits and asks again, at most
 * MAX_ATTEMPTS times, backing off. *conn may be replaced. Returns LG_OK or the
 * failure that ended it, after printing what the server said.
 */
static lg_status read_blocks(lg_conn **conn, const char *socket_path, const char *tenant, lg_page_key first,
                             uint32_t count, uint64_t lsn, unsigned char (*pages)[LG_PAGE_SIZE]) {
    lg_page_read *reads = calloc(count, sizeof *reads);
    if (reads == NULL) return LG_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < count; i++) {
        reads[i].key = first;
        reads[i].key.block = first.block + i;
        reads[i].lsn = lsn;
        reads[i].page = pages[i];
    }
    lg_status s = LG_OK;
    long backoff_ms = 50;
    for (int attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        s = *conn == NULL ? lg_connect(socket_path, 5000, conn) : LG_OK;
        if (s == LG_OK) s = lg_get_pages(*conn, tenant, reads, count);
        if (s == LG_OK) break;
        bool reconnect = false;
        if (!retryable(s, &reconnect) || attempt == MAX_ATTEMPTS) {
            fprintf(stderr, "compute_node: reading %u blocks from %u failed: %s\n", count, first.block, lg_errmsg(*conn));
            break;
        }
        fprintf(stderr, "compute_node: attempt %d: %s; retrying in %ld ms\n", attempt, lg_errmsg(*conn), backoff_ms);
        if (reconnect) { lg_close(*conn); *conn = NULL; }
        pause_ms(backoff_ms);
        backoff_ms *= 2;
    }
    free(reads);
    return s;
}

static int usage(FILE *to, int code) {
    fprintf(to, "usage: compute_node [--socket PATH] [--lsn N|latest] TENANT SPC DB REL FIRST_BLOCK COUNT\n"
                "  reads COUNT blocks of relation SPC/DB/REL (main fork) as of the LSN (default: latest)\n"
                "  from the layergated on PATH (default ./.layergate/layergate.sock)\n");
    return code;
}

static bool parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    const char *socket_path = "./.layergate/layergate.sock";
    uint64_t lsn = LG_LSN_LATEST;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--help") == 0) return usage(stdout, 0);
        if (i + 1 >= argc) return usage(stderr, 2);
        if (strcmp(argv[i], "--socket") == 0) socket_path = argv[++i];
        else if (strcmp(argv[i], "--lsn") == 0) {
            i++;
            if (strcmp(argv[i], "latest") != 0 && !parse_u64(argv[i], &lsn)) return usage(stderr, 2);
        } else return usage(stderr, 2);
    }
    if (argc - i != 6) return usage(stderr, 2);
    const char *tenant = argv[i];
    uint64_t v[5];
    for (int k = 0; k < 5; k++)
        if (!parse_u64(argv[i + 1 + k], &v[k]) || v[k] > UINT32_MAX) return usage(stderr, 2);
    if (v[4] == 0 || v[4] > MAX_BLOCKS) {
        fprintf(stderr, "compute_node: COUNT must be 1 to %d\n", MAX_BLOCKS);
        return 2;
    }
    lg_page_key first = {.spc_oid = (uint32_t)v[0], .db_oid = (uint32_t)v[1], .rel_number = (uint32_t)v[2],
                         .fork = 0, .block = (uint32_t)v[3]};
    uint32_t count = (uint32_t)v[4];
    unsigned char (*pages)[LG_PAGE_SIZE] = malloc((size_t)count * LG_PAGE_SIZE);
    if (pages == NULL) return 1;

    lg_conn *conn = NULL;
    lg_status s = read_blocks(&conn, socket_path, tenant, first, count, lsn, pages);
    if (s == LG_OK) {
        for (uint32_t b = 0; b < count; b++) {
            uint32_t sum = 0;  /* a simple hash, to show which bytes arrived */
            for (int k = 0; k < LG_PAGE_SIZE; k++) sum = sum * 31 + pages[b][k];
            printf("block %" PRIu32 ": %08" PRIx32 "\n", first.block + b, sum);
        }
    }
    lg_close(conn);
    free(pages);
    return s == LG_OK ? 0 : 1;
}
