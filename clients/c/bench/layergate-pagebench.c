/*
 * layergate-pagebench: random GetPage over a data set far larger than the
 * server's page cache, in the manner of Neon's pagebench, with the disk's own
 * random-read latency measured on the same files as the baseline.
 *
 *   load   fills a tenant: --pages keys, --versions images of each, in key
 *          order per version (version v of key k at LSN v*pages + k + 1), from
 *          one connection with --pipeline puts in flight (lg_put_many), prints
 *          the MiB/s, then compacts it. The bytes of each image name its key and version.
 *   get    -c clients, each on its own connection and thread, each sending one
 *          GetPage at a time for a random key, at `latest` or (--past) at a
 *          random LSN whose expected version is known; every byte of every
 *          page is checked (a memcmp against fill_image's pattern). The first
 *          error answer ends the run, or with --keep-going is counted by code
 *          (printed after the figures) and the client reads on.
 *          --epoll: the same connections all on one thread and one epoll set,
 *          the shape of redis-benchmark and of Neon's pagebench (async
 *          clients on few threads): the client's own thread wake-ups then
 *          weigh less on a small machine.
 *   raw    -c threads of random 8 KiB O_DIRECT preads over the tenant's layer
 *          files (--dir, the tenant's directory): the disk, with no server.
 *   evict  drops the tenant's layer files from the OS page cache
 *          (posix_fadvise DONTNEED; and /proc/sys/vm/drop_caches when root).
 *   self-test  checks the page check itself (the C tests run it).
 *
 *   --rate R   get and raw: each client reads R times a second at Poisson
 *          arrivals, answered or not (an open loop, as pagebench's
 *          --per-target-rate-limit), each latency from its due time; without
 *          it each client sends its next read when the last is answered.
 *          Reads due before the end but never sent (the server or disk fell
 *          behind) count as waiting until the end, and their number is printed.
 *   --seed N   get and raw: another sequence of keys and arrivals, so that a
 *          warm-up does not read the very keys of the run after it.
 *
 * get and raw print one line: ops/s and the p50, p99 and p99.9 of one request;
 * get with --keep-going a second when the server answered errors, their count by code.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct config {
    const char *socket, *tenant, *token, *dir;
    int clients, pages, versions, pipeline;
    double seconds;
    double rate;  /* get and raw: each client's reads a second, an open loop (a pacer); 0: closed */
    uint64_t seed;  /* get and raw: mixed into every client's random keys and arrivals (--seed) */
    bool past, compact, epoll, keep_going;
} config;

typedef struct layer_file {
    int fd;
    uint64_t blocks, first;  /* its size in 8 KiB blocks; blocks of every file before it */
} layer_file;

typedef struct files {
    layer_file *list;
    size_t count;
    uint64_t blocks;
} files;

typedef struct worker {
    const config *cfg;
    const files *layers;
    int index;
    uint64_t deadline;
    histogram h;
    unsigned long errors[SERVER_CODES];  /* --keep-going: the server's error answers, by code */
    uint64_t unsent;  /* --rate: reads due before the deadline and never sent (pacer_drain) */
    char error[600];
    pthread_t thread;
} worker;

static pthread_barrier_t start_line;

static uint64_t next_random(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/* Every byte of version v of key k: the first 8 bytes k, the next 8 v, then a pattern of both. */
static void fill_image(unsigned char *page, uint32_t k, uint32_t v) {
    uint64_t a = k, b = v;
    memcpy(page, &a, 8);
    memcpy(page + 8, &b, 8);
    for (int i = 16; i < LG_PAGE_SIZE; i++) page[i] = (unsigned char)(k * 31 + v * 7 + (uint32_t)i);
}

static bool connect_to(const config *c, lg_conn **out, char *error, size_t len) {
    if (lg_connect(c->socket, 600000, out) == LG_OK && (c->token == NULL || lg_set_auth_token(*out, c->token) == LG_OK))
        return true;
    snprintf(error, len, "connect to %s: %s", c->socket, lg_errmsg(*out));
    lg_close(*out);
    *out = NULL;
    return false;
}

static int load(const config *c) {
    char error[600];
    lg_conn *conn;
    if (!connect_to(c, &conn, error, sizeof error)) {
        fprintf(stderr, "layergate-pagebench: %s\n", error);
        return 1;
    }
    lg_tenant_info info;
    lg_status s = lg_tenant_status(conn, c->tenant, &info);
    if (s == LG_TENANT_NOT_FOUND) {
        s = lg_create_tenant(conn, c->tenant);
        if (s == LG_OK) s = lg_tenant_status(conn, c->tenant, &info);
    }
    uint64_t total = (uint64_t)c->pages * (uint64_t)c->versions;
    if (s == LG_OK && info.last_record_lsn != 0 && info.last_record_lsn != total) {
        fprintf(stderr, "layergate-pagebench: tenant %s holds %" PRIu64 " records, not %" PRIu64
                        " (another shape): reset it or pick another tenant\n", c->tenant, info.last_record_lsn, total);
        lg_close(conn);
        return 1;
    }
    /* Puts of 64 images, `pipeline` of them in flight (lg_put_many): the server applies them in order. */
    enum { BATCH = 64 };
    size_t depth = (size_t)c->pipeline;
    unsigned char *images = malloc(depth * BATCH * LG_PAGE_SIZE);
    lg_record *recs = malloc(depth * BATCH * sizeof *recs);
    lg_put *puts = malloc(depth * sizeof *puts);
    if (images == NULL || recs == NULL || puts == NULL) s = LG_OUT_OF_MEMORY;
    uint64_t t0 = now_ns(), lsn = info.last_record_lsn;
    while (s == LG_OK && lsn < total) {
        size_t p = 0;
        for (; p < depth && lsn < total; p++) {
            size_t n = 0;
            for (; n < BATCH && lsn < total; n++, lsn++) {
                uint32_t v = (uint32_t)(lsn / (uint64_t)c->pages), k = (uint32_t)(lsn % (uint64_t)c->pages);
                unsigned char *image = images + (p * BATCH + n) * LG_PAGE_SIZE;
                fill_image(image, k, v);
                recs[p * BATCH + n] = (lg_record){.key = key(k), .lsn = lsn + 1, .image = image, .image_len = LG_PAGE_SIZE};
            }
            puts[p] = (lg_put){.records = recs + p * BATCH, .count = n};
        }
        s = lg_put_many(conn, c->tenant, puts, p);
        if (isatty(2))
            fprintf(stderr, "\rlayergate-pagebench: loaded %" PRIu64 " MiB of %" PRIu64, lsn / 128, total / 128);
    }
    free(images);
    free(recs);
    free(puts);
    if (isatty(2)) fputc('\n', stderr);
    if (s == LG_OK && info.last_record_lsn < total) {
        double secs = (double)(now_ns() - t0) / 1e9;
        printf("put %" PRIu64 " MiB in %.2f s: %.1f MiB/s (one connection, %d images a put, %d puts in flight)\n",
               (total - info.last_record_lsn) / 128, secs, (double)(total - info.last_record_lsn) / 128.0 / secs, BATCH,
               c->pipeline);
        fflush(stdout);
    }
    lg_compact_result r;
    if (s == LG_OK && c->compact) s = lg_compact(conn, c->tenant, false, &r);
    if (s == LG_OK) s = lg_tenant_status(conn, c->tenant, &info);
    if (s != LG_OK) {
        fprintf(stderr, "layergate-pagebench: loading tenant %s: %s\n", c->tenant, lg_errmsg(conn));
        lg_close(conn);
        return 1;
    }
    printf("tenant %s: %d keys x %d versions, %u layers, %.0f MiB of layer files\n", c->tenant, c->pages, c->versions,
           info.layer_count, (double)info.layer_bytes / 1048576.0);
    lg_close(conn);
    return 0;
}

/* One GetPage of a run: a random key, at latest or at a random past LSN, and the version it must find. */
typedef struct target {
    uint32_t k;
    uint64_t lsn, want;
} target;

/* Client `client`'s random state for a run seeded `base` (--seed: a warm-up reads other keys than the run after it). */
static uint64_t seed(uint64_t base, int client) {
    return 88172645463325252ull ^ ((uint64_t)(client + 1) * 0x9E3779B97F4A7C15ull) ^ (base * 0xD1B54A32D192ED03ull);
}

/* The same for its arrivals (--rate), apart from its keys. */
static uint64_t arrival_seed(uint64_t base, int client) { return seed(base, client) ^ 0x5851F42D4C957F2Dull; }

static target pick(const config *c, uint64_t *x) {
    uint64_t n = (uint64_t)c->pages, newest = n * (uint64_t)c->versions;
    target t = {.k = (uint32_t)(next_random(x) % n)};
    /* A past LSN in [n, newest] finds a version of every key: version 0 of k is at k + 1 <= n. */
    t.lsn = c->past ? n + next_random(x) % (newest - n + 1) : LG_LSN_LATEST;
    t.want = c->past ? (t.lsn - t.k - 1) / n : (uint64_t)c->versions - 1;
    return t;
}

/* fill_image's pattern after the first 16 bytes, from every starting byte: the
 * bytes of version v of key k from offset 16 are ramp[(k * 31 + v * 7 + 16) % 256 ...]. */
static unsigned char ramp[256 + LG_PAGE_SIZE];

static void make_ramp(void) {
    for (size_t i = 0; i < sizeof ramp; i++) ramp[i] = (unsigned char)i;
}

/* The page must be, byte for byte, the version of its key that its LSN sees. */
static int check_page(target t, const unsigned char *page, char *error, size_t len) {
    uint64_t got_k, got_v;
    memcpy(&got_k, page, 8);
    memcpy(&got_v, page + 8, 8);
    if (got_k != t.k || got_v != t.want) {
        snprintf(error, len, "block %u at LSN %" PRIu64 ": got key %" PRIu64 " version %" PRIu64 ", want version %" PRIu64,
                 t.k, t.lsn, got_k, got_v, t.want);
        return -1;
    }
    const unsigned char *want = ramp + ((t.k * 31 + (uint32_t)t.want * 7 + 16) & 255);
    if (memcmp(page + 16, want, LG_PAGE_SIZE - 16) == 0) return 0;
    size_t at = 16;
    while (page[at] == want[at - 16]) at++;
    snprintf(error, len, "block %u at LSN %" PRIu64 ": version %" PRIu64 " has byte %zu = %u, want %u", t.k, t.lsn,
             t.want, at, page[at], want[at - 16]);
    return -1;
}

/* self-test: check_page against fill_image, and against the same pages with one
 * byte wrong at each end and in the middle, or another version's header. */
static int self_test(void) {
    static unsigned char page[LG_PAGE_SIZE];
    char error[256];
    const uint32_t keys[] = {0, 1, 255, 256, 70001, 131071, 0x7fffffff, 0xffffffff};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        for (uint32_t v = 0; v < 3; v++) {
            target t = {.k = keys[i], .lsn = 1, .want = v};
            fill_image(page, t.k, v);
            if (check_page(t, page, error, sizeof error) != 0) {
                fprintf(stderr, "self-test: a right page refused: %s\n", error);
                return 1;
            }
            const size_t wrong[] = {0, 7, 8, 15, 16, 17, 4096, LG_PAGE_SIZE - 1};
            for (size_t j = 0; j < sizeof wrong / sizeof wrong[0]; j++) {
                page[wrong[j]] ^= 0x40;
                if (check_page(t, page, error, sizeof error) == 0) {
                    fprintf(stderr, "self-test: key %u version %u with byte %zu wrong was taken\n", t.k, v, wrong[j]);
                    return 1;
                }
                page[wrong[j]] ^= 0x40;
            }
            t.want = v + 1;
            if (check_page(t, page, error, sizeof error) == 0) {
                fprintf(stderr, "self-test: version %u taken for %u\n", v, v + 1);
                return 1;
            }
        }
    }
    /* --rate's arrivals: 200,000 at 1,000 a second span 200 s (within 1 %), never step back,
     * and spread as an exponential does (mean = standard deviation, 36.8 % over the mean). */
    pacer p;
    pacer_start(&p, 1000, 0, arrival_seed(0, 0));
    uint64_t last = 0, over = 0;
    double sum2 = 0;
    enum { DRAWS = 200000 };
    for (int i = 0; i < DRAWS; i++) {
        uint64_t due = pacer_next(&p);
        if (due < last) {
            fprintf(stderr, "self-test: a due time stepped back\n");
            return 1;
        }
        double gap = (double)(due - last) / 1e6;  /* ms: the mean is 1 */
        sum2 += gap * gap;
        over += gap > 1;
        last = due;
    }
    double mean = (double)last / 1e6 / DRAWS, sd = sqrt(sum2 / DRAWS - mean * mean), share = (double)over / DRAWS;
    if (fabs(mean - 1) > 0.01 || fabs(sd - 1) > 0.02 || fabs(share - exp(-1)) > 0.01) {
        fprintf(stderr, "self-test: --rate 1000 drew gaps of mean %.4f ms, sd %.4f, %.4f over the mean\n", mean, sd, share);
        return 1;
    }
    printf("layergate-pagebench self-test: every byte of a page is checked; --rate's arrivals are Poisson\n");
    return 0;
}

/* --epoll: every connection's next GetPage and the answer it must get. */
typedef struct epoll_get {
    const config *c;
    uint64_t *x;
    target *asked;
    unsigned long *errors;  /* --keep-going: the server's error answers, by code (else NULL) */
} epoll_get;

static size_t epoll_request(void *ctx, int i, int d, unsigned char *at) {
    (void)d;  /* one GetPage at a time per connection */
    epoll_get *g = ctx;
    g->asked[i] = pick(g->c, &g->x[i]);
    return page_request(at, 1, g->c->tenant, g->c->token, key(g->asked[i].k), g->asked[i].lsn);
}

static int epoll_check(void *ctx, int conn, uint64_t id, const unsigned char *page, char *error, size_t len) {
    epoll_get *g = ctx;
    if (id != 1) {
        snprintf(error, len, "an answer to request %" PRIu64 ", not to the one asked", id);
        return -1;
    }
    return check_page(g->asked[conn], page, error, len);
}

static long epoll_take(void *ctx, int i, const unsigned char *in, size_t len, int *answers, char *error, size_t error_len) {
    return take_pages(in, len, answers, epoll_check, ctx, i, ((epoll_get *)ctx)->errors, error, error_len);
}

static int run_get_epoll(const config *c, histogram *all, unsigned long *errors, uint64_t *unsent, char *error, size_t len) {
    epoll_get g = {.c = c, .x = calloc((size_t)c->clients, sizeof *g.x), .asked = calloc((size_t)c->clients, sizeof *g.asked),
                   .errors = c->keep_going ? errors : NULL};
    int rc = -1;
    if (g.x == NULL || g.asked == NULL) {
        snprintf(error, len, "out of memory");
    } else {
        for (int i = 0; i < c->clients; i++) g.x[i] = seed(c->seed, i);
        epoll_work w = {.socket = c->socket, .clients = c->clients, .depth = 1, .seconds = c->seconds, .rate = c->rate,
                        .seed = arrival_seed(c->seed, 0), .unsent = unsent,
                        .request_max = page_request_max(c->tenant, c->token), .answer_max = page_answer_max(),
                        .answer_limit = page_answer_limit(), .request = epoll_request, .take = epoll_take, .ctx = &g};
        rc = run_epoll_work(&w, all, error, len);
    }
    free(g.x);
    free(g.asked);
    return rc;
}

/* A thread client's start: its pacer (with --rate) and its deadline. */
static uint64_t paced_start(const config *c, int client, pacer *pace) {
    uint64_t start = now_ns();
    if (c->rate > 0) pacer_start(pace, c->rate, start, arrival_seed(c->seed, client));
    return start + (uint64_t)(c->seconds * 1e9);
}

/* --rate: the due time of the next read, slept until when it is still to come
 * (not past the deadline: the caller ends the run there). */
static uint64_t wait_due(pacer *pace, uint64_t deadline) {
    uint64_t due = pacer_next(pace);
    if (due >= deadline) return due;
    struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u), .tv_nsec = (long)(due % 1000000000u)};
    while (due > now_ns() && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
    return due;
}

/* A read ended at `t1`: past the deadline the run is over; with --rate, reads
 * that fell due before it are still made (the loop ends at the first due past
 * it) until the grace after it ends, and then what is left is counted. */
static bool run_over(worker *w, pacer *pace, uint64_t t1) {
    if (w->cfg->rate == 0) return t1 >= w->deadline;
    if (t1 < w->deadline + drain_grace_ns) return false;
    w->unsent = pacer_drain(pace, t1, w->deadline, &w->h, 1);
    return true;
}

static void *run_get(void *arg) {
    worker *w = arg;
    const config *c = w->cfg;
    lg_conn *conn;
    bool ok = connect_to(c, &conn, w->error, sizeof w->error);
    unsigned char page[LG_PAGE_SIZE];
    uint64_t x = seed(c->seed, w->index);
    pthread_barrier_wait(&start_line);
    pacer pace;
    w->deadline = paced_start(c, w->index, &pace);
    while (ok) {
        target t = pick(c, &x);
        uint64_t t0 = c->rate > 0 ? wait_due(&pace, w->deadline) : now_ns();
        if (t0 >= w->deadline) break;
        /* A stopped server ends the run stall_limit_ns past its end, as the epoll clients do
         * (the connection's own timeout, for the load, is 10 minutes). */
        uint64_t wait_ms = (w->deadline - t0 + stall_limit_ns) / 1000000u;
        lg_set_timeout(conn, wait_ms > INT_MAX ? INT_MAX : (int)wait_ms);
        lg_status s = lg_get_page(conn, c->tenant, key(t.k), t.lsn, page, sizeof page, NULL);
        uint64_t t1 = now_ns();
        if (s != LG_OK && c->keep_going && s >= LG_INVALID_ARGUMENT && s <= LG_UNKNOWN_SERVER_ERROR) {
            /* The server's answer. When it also closed the connection (an answer to
             * request 0), the next call says so and ends this client. */
            w->errors[server_code_slot(s)]++;
            record(&w->h, t1 - t0, 1);
            if (run_over(w, &pace, t1)) break;
            continue;
        }
        if (s != LG_OK) {
            snprintf(w->error, sizeof w->error, "GetPage of block %u: %s", t.k, lg_errmsg(conn));
            break;
        }
        if (check_page(t, page, w->error, sizeof w->error) != 0) break;
        record(&w->h, t1 - t0, 1);
        if (run_over(w, &pace, t1)) break;
    }
    if (conn) lg_close(conn);
    return NULL;
}

static void *run_raw(void *arg) {
    worker *w = arg;
    const files *f = w->layers;
    void *buf = NULL;
    bool ok = posix_memalign(&buf, 4096, LG_PAGE_SIZE) == 0;
    uint64_t x = 0x2545F4914F6CDD1Dull ^ seed(w->cfg->seed, w->index);
    pthread_barrier_wait(&start_line);
    pacer pace;
    w->deadline = paced_start(w->cfg, w->index, &pace);
    while (ok) {
        uint64_t b = next_random(&x) % f->blocks;
        size_t lo = 0, hi = f->count;  /* the file holding global block b */
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (f->list[mid].first <= b) lo = mid; else hi = mid;
        }
        const layer_file *l = &f->list[lo];
        uint64_t t0 = w->cfg->rate > 0 ? wait_due(&pace, w->deadline) : now_ns();
        if (t0 >= w->deadline) break;
        ssize_t got = pread(l->fd, buf, LG_PAGE_SIZE, (off_t)((b - l->first) * LG_PAGE_SIZE));
        uint64_t t1 = now_ns();
        if (got != LG_PAGE_SIZE) {
            snprintf(w->error, sizeof w->error, "pread: %s", got < 0 ? strerror(errno) : "short read");
            break;
        }
        record(&w->h, t1 - t0, 1);
        if (run_over(w, &pace, t1)) break;
    }
    free(buf);
    return NULL;
}

/* The tenant directory's layer files (every regular file but index.json and temp files), opened with `flags`. */
static int open_layers(const char *dir, int flags, files *out) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "layergate-pagebench: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    *out = (files){0};
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "index.json") == 0 || strstr(e->d_name, ".tmp") != NULL) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        int fd = openat(dirfd(d), e->d_name, flags | O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "layergate-pagebench: %s/%s: %s\n", dir, e->d_name, strerror(errno));
            closedir(d);
            return -1;
        }
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < LG_PAGE_SIZE) {
            close(fd);
            continue;
        }
        if (out->count == cap) {
            cap = cap ? 2 * cap : 64;
            layer_file *grown = realloc(out->list, cap * sizeof *grown);
            if (grown == NULL) { close(fd); closedir(d); return -1; }
            out->list = grown;
        }
        out->list[out->count++] = (layer_file){.fd = fd, .blocks = (uint64_t)st.st_size / LG_PAGE_SIZE, .first = out->blocks};
        out->blocks += (uint64_t)st.st_size / LG_PAGE_SIZE;
    }
    closedir(d);
    if (out->blocks == 0) {
        fprintf(stderr, "layergate-pagebench: no layer files in %s\n", dir);
        return -1;
    }
    return 0;
}

static void close_layers(files *f) {
    for (size_t i = 0; i < f->count; i++) close(f->list[i].fd);
    free(f->list);
}

static int evict(const config *c) {
    files f;
    if (open_layers(c->dir, 0, &f) != 0) return 1;
    for (size_t i = 0; i < f.count; i++) posix_fadvise(f.list[i].fd, 0, 0, POSIX_FADV_DONTNEED);
    printf("evicted %zu layer files (%.0f MiB) from the OS page cache", f.count, (double)f.blocks / 128.0);
    close_layers(&f);
    if (geteuid() == 0) {
        sync();
        int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
        if (fd >= 0 && write(fd, "3", 1) == 1) printf("; dropped every clean cache (root)");
        if (fd >= 0) close(fd);
    }
    printf("\n");
    return 0;
}

static int measure(const config *c, bool raw) {
    files f = {0};
    if (raw && open_layers(c->dir, O_DIRECT, &f) != 0) return 1;
    bool epoll = c->epoll && !raw;
    worker *w = calloc((size_t)c->clients, sizeof *w);  /* the thread modes' */
    histogram *all = calloc(1, sizeof *all);
    unsigned long errors[SERVER_CODES] = {0};
    uint64_t unsent = 0;
    if (w == NULL || all == NULL) return 1;
    uint64_t start = now_ns();
    int failed = 0;
    if (epoll) {
        char error[600];
        if (run_get_epoll(c, all, errors, &unsent, error, sizeof error) != 0) {
            fprintf(stderr, "layergate-pagebench: %s\n", error);
            failed = 1;
        }
    } else {
        pthread_barrier_init(&start_line, NULL, (unsigned)c->clients + 1);
        for (int i = 0; i < c->clients; i++) {
            w[i] = (worker){.cfg = c, .layers = &f, .index = i};
            pthread_create(&w[i].thread, NULL, raw ? run_raw : run_get, &w[i]);
        }
        pthread_barrier_wait(&start_line);
        start = now_ns();
    }
    for (int i = 0; !epoll && i < c->clients; i++) {
        pthread_join(w[i].thread, NULL);
        if (w[i].error[0]) { fprintf(stderr, "layergate-pagebench: client %d: %s\n", i, w[i].error); failed = 1; }
        for (int b = 0; b < BUCKETS; b++) all->counts[b] += w[i].h.counts[b];
        if (w[i].h.max > all->max) all->max = w[i].h.max;
        all->total += w[i].h.total;
        for (int e = 0; e < SERVER_CODES; e++) errors[e] += w[i].errors[e];
        unsent += w[i].unsent;
    }
    double secs = (double)(now_ns() - start) / 1e9;
    /* An open loop's run is its length, even when its last read fell due early. */
    if (c->rate > 0 && secs < c->seconds) secs = c->seconds;
    if (!epoll) pthread_barrier_destroy(&start_line);
    unsigned long refused = 0;
    for (int e = 0; e < SERVER_CODES; e++) refused += errors[e];
    if (!failed && all->total == 0) {
        fprintf(stderr, "layergate-pagebench: no read was made in the run\n");
        failed = 1;
    }
    if (!failed && all->total > 0) {
        double us = 1e-3;
        uint64_t done = all->total - unsent;
        char what[160];
        if (raw) snprintf(what, sizeof what, ", 8 KiB at random block offsets");
        else if (refused == 0) snprintf(what, sizeof what, ", each page checked");
        else snprintf(what, sizeof what, ": %" PRIu64 " pages, each checked, and %lu error answers", done - refused, refused);
        char paced[80] = "";
        if (c->rate > 0) snprintf(paced, sizeof paced, ", each due %g times a second (open loop)", c->rate);
        printf("%s: %.0f ops/s, p50 %.0f us, p99 %.0f us, p99.9 %.0f us (%d %s%s, %" PRIu64 " reads%s)\n",
               raw ? "raw O_DIRECT pread" : (c->past ? "GetPage past LSN" : "GetPage latest"),
               (double)done / secs, (double)percentile(all, 0.5) * us, (double)percentile(all, 0.99) * us,
               (double)percentile(all, 0.999) * us, c->clients, raw ? "threads" : epoll ? "clients on one epoll thread" : "clients", paced,
               done, what);
        if (unsent > 0)
            printf("%" PRIu64 " more reads fell due before the end and were never sent (the %s fell behind): the percentiles "
                   "count each as waiting until the end\n", unsent, raw ? "disk" : "server");
    }
    if (refused > 0) {
        /* --keep-going: the figures above count these answers too, which carried no page. */
        printf("server errors answered: %lu of %" PRIu64 " reads (", refused, all->total);
        const char *sep = "";
        for (int e = 0; e < SERVER_CODES; e++) {
            if (errors[e] == 0) continue;
            printf("%s%s %lu", sep, lg_status_name((lg_status)e), errors[e]);
            sep = ", ";
        }
        printf(")\n");
        if (refused == all->total) {
            fprintf(stderr, "layergate-pagebench: every answer was an error: no page was read\n");
            failed = 1;
        }
    }
    if (raw) close_layers(&f);
    free(w);
    free(all);
    return failed || all == NULL ? 1 : 0;
}

static int usage(FILE *to, int code) {
    fprintf(to,
            "usage: layergate-pagebench load|get|raw|evict|self-test [options]\n"
            "  -s SOCKET       layergated's socket (default ./.layergate/layergate.sock)\n"
            "  --tenant ID     (default be0c0000000000000000000000000003)\n"
            "  --pages N       keys (default 131072: 1 GiB per version)\n"
            "  --versions V    images of each key (default 2)\n"
            "  --pipeline D    load: puts of 64 images in flight at once (default 16)\n"
            "  --no-compact    load: leave the layers as ingest wrote them\n"
            "  -c N            clients (get) or threads (raw) (default 8)\n"
            "  -t SECONDS      how long get and raw run (default 10)\n"
            "  --past          get reads at random past LSNs instead of latest\n"
            "  --rate R        get and raw: each client's reads fall due R times a second (Poisson), answered\n"
            "                  or not, and each latency runs from its due time (default: the next read\n"
            "                  goes out when the last is answered); reads due and not sent by the end count\n"
            "                  as waiting until it; at least one due per client in the run (R x SECONDS >= 1)\n"
            "  --seed N        get and raw: another sequence of random keys and arrivals (default 0)\n"
            "  --epoll         get: every connection on one thread and one epoll set (default: a thread each)\n"
            "  --keep-going    get: count the server's error answers by code and read on (default: the\n"
            "                  first ends its client and fails the run); a page with a wrong byte, a broken\n"
            "                  connection, a timeout or an answer that is not one still does\n"
            "  --dir DIR       the tenant's directory (DATA_DIR/tenants/ID), for raw and evict\n"
            "  --token JWT     sent with every request (default: $LAYERGATE_TOKEN); load needs admin\n");
    return code;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(stderr, 2);
    const char *mode = argv[1];
    config c = {.socket = "./.layergate/layergate.sock", .tenant = "be0c0000000000000000000000000003",
                .token = getenv("LAYERGATE_TOKEN"), .clients = 8, .pages = 131072, .versions = 2, .seconds = 10,
                .pipeline = 16, .compact = true};
    const char *rate = NULL;  /* --rate, checked once -t is known */
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--past") == 0) c.past = true;
        else if (strcmp(a, "--no-compact") == 0) c.compact = false;
        else if (strcmp(a, "--epoll") == 0) c.epoll = true;
        else if (strcmp(a, "--keep-going") == 0) c.keep_going = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(stdout, 0);
        else if (v == NULL) return usage(stderr, 2);
        else if (strcmp(a, "-s") == 0) c.socket = v, i++;
        else if (strcmp(a, "--tenant") == 0) c.tenant = v, i++;
        else if (strcmp(a, "--pages") == 0) c.pages = atoi(v), i++;
        else if (strcmp(a, "--versions") == 0) c.versions = atoi(v), i++;
        else if (strcmp(a, "-c") == 0) c.clients = atoi(v), i++;
        else if (strcmp(a, "--pipeline") == 0) c.pipeline = atoi(v), i++;
        else if (strcmp(a, "-t") == 0) c.seconds = atof(v), i++;
        else if (strcmp(a, "--rate") == 0) rate = v, i++;
        else if (strcmp(a, "--seed") == 0) {
            char *end;
            c.seed = strtoull(v, &end, 10), i++;
            if (end == v || *end != '\0') return usage(stderr, 2);
        }
        else if (strcmp(a, "--dir") == 0) c.dir = v, i++;
        else if (strcmp(a, "--token") == 0) c.token = v, i++;
        else return usage(stderr, 2);
    }
    if (c.clients < 1 || c.pages < 1 || c.versions < 1 || c.seconds <= 0 || c.pipeline < 1) return usage(stderr, 2);
    if (rate && (c.rate = parse_rate(rate, c.seconds)) < 0) {
        fprintf(stderr, "layergate-pagebench: --rate %s: a number of reads a second, at least one due per client in the "
                        "run (%g s), at most 10,000,000\n", rate, c.seconds);
        return 2;
    }
    /* Due times are kept to the microsecond, not to the 50 µs of a thread's default timer slack
     * (its threads inherit it). */
    if (c.rate > 0) prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    if (strcmp(mode, "-h") == 0 || strcmp(mode, "--help") == 0) return usage(stdout, 0);
    make_ramp();
    if (strcmp(mode, "self-test") == 0) return self_test();
    if (strcmp(mode, "load") == 0) return load(&c);
    if (strcmp(mode, "get") == 0) return measure(&c, false);
    if ((strcmp(mode, "raw") == 0 || strcmp(mode, "evict") == 0) && c.dir == NULL) {
        fprintf(stderr, "layergate-pagebench: %s needs --dir (DATA_DIR/tenants/ID)\n", mode);
        return 2;
    }
    if (strcmp(mode, "raw") == 0) return measure(&c, true);
    if (strcmp(mode, "evict") == 0) return evict(&c);
    return usage(stderr, 2);
}
