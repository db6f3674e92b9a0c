/*
 * layergate-cbench: GetPage round trips for preloaded, cached pages, in the
 * manner of redis-benchmark: N connections, each sending D requests at a time
 * (a pipelined batch) and waiting for all D, for T seconds. By default each
 * connection has a thread of its own and uses liblayergate; with --epoll one
 * thread drives them all, as redis-benchmark does (bench/epoll-mode.c). Prints ops/s and latency percentiles like redis-benchmark
 * (-q: its one-line form; --csv: its CSV, plus a p99.9 column).
 *
 * A request's latency is its batch's round trip (the batch is sent at once
 * and its answers arrive together), as redis-benchmark measures with -P:
 * with --epoll from just before the send to the first event of the answers,
 * as redis-benchmark takes it (--to-last-byte: until the last is parsed); a
 * thread of its own measures until its last answer is parsed.
 * The pages are the ones `layergate bench` uses (same tenant, keys and bytes),
 * so both benches read the same cached data.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

typedef struct worker {
    const options *o;
    int index;
    uint64_t lsn, deadline;
    histogram h;
    char error[600];
    pthread_t thread;
} worker;

static pthread_barrier_t start_line;  /* every client starts together */

static void *run_worker(void *arg) {
    worker *w = arg;
    const options *o = w->o;
    lg_conn *c;
    if (lg_connect(o->socket, 10000, &c) != LG_OK || (o->token && lg_set_auth_token(c, o->token) != LG_OK)) {
        snprintf(w->error, sizeof w->error, "connect: %s", lg_errmsg(c));
        lg_close(c);
        pthread_barrier_wait(&start_line);
        return NULL;
    }
    lg_page_read *reads = calloc((size_t)o->depth, sizeof *reads);
    unsigned char *pages = malloc((size_t)o->depth * LG_PAGE_SIZE);
    uint64_t x = 88172645463325252ull ^ ((uint64_t)w->index * 0x9E3779B97F4A7C15ull);
    pthread_barrier_wait(&start_line);
    w->deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
    while (reads != NULL && pages != NULL) {
        for (int d = 0; d < o->depth; d++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            reads[d] = (lg_page_read){.key = key((uint32_t)(x % (uint64_t)o->pages)), .lsn = w->lsn,
                                      .page = pages + (size_t)d * LG_PAGE_SIZE};
        }
        uint64_t t0 = now_ns();
        lg_status s = lg_get_pages(c, o->tenant, reads, (size_t)o->depth);
        uint64_t t1 = now_ns();
        if (s != LG_OK) {
            snprintf(w->error, sizeof w->error, "%s", lg_errmsg(c));
            break;
        }
        record(&w->h, t1 - t0, (uint64_t)o->depth);
        if (t1 >= w->deadline) break;
    }
    free(reads);
    free(pages);
    lg_close(c);
    return NULL;
}

/* Creates and fills the tenant when it lacks the pages, then reads each once so that all are cached. */
static int preload(const options *o, uint64_t *lsn) {
    lg_conn *c;
    if (lg_connect(o->socket, 60000, &c) != LG_OK || (o->token && lg_set_auth_token(c, o->token) != LG_OK)) {
        fprintf(stderr, "layergate-cbench: %s\n", lg_errmsg(c));
        lg_close(c);
        return -1;
    }
    lg_tenant_info info;
    lg_status s = lg_tenant_status(c, o->tenant, &info);
    if (s == LG_TENANT_NOT_FOUND) {
        s = lg_create_tenant(c, o->tenant);
        if (s == LG_OK) s = lg_tenant_status(c, o->tenant, &info);
    }
    static unsigned char images[64][LG_PAGE_SIZE];
    for (uint32_t start = (uint32_t)info.last_record_lsn; s == LG_OK && start < (uint32_t)o->pages; start += 64) {
        lg_record recs[64];
        size_t n = 0;
        for (uint32_t i = start; i < start + 64 && i < (uint32_t)o->pages; i++, n++) {
            memset(images[n], (int)(i & 0xFF), LG_PAGE_SIZE);
            recs[n] = (lg_record){.key = key(i), .lsn = i + 1, .image = images[n], .image_len = LG_PAGE_SIZE};
        }
        s = lg_put_records(c, o->tenant, recs, n, NULL);
    }
    if (s == LG_OK) s = lg_tenant_status(c, o->tenant, &info);
    unsigned char page[LG_PAGE_SIZE];
    for (int i = 0; s == LG_OK && i < o->pages; i++)
        s = lg_get_page(c, o->tenant, key((uint32_t)i), info.last_record_lsn, page, sizeof page, NULL);
    if (s != LG_OK) fprintf(stderr, "layergate-cbench: preloading %d pages: %s\n", o->pages, lg_errmsg(c));
    *lsn = info.last_record_lsn;
    lg_close(c);
    return s == LG_OK ? 0 : -1;
}

/* The thread-per-connection mode; `start` is set when every thread is ready. */
static int run_threads(const options *o, uint64_t lsn, histogram *all, uint64_t *start) {
    worker *w = calloc((size_t)o->clients, sizeof *w);
    if (w == NULL) return 1;
    pthread_barrier_init(&start_line, NULL, (unsigned)o->clients + 1);
    for (int i = 0; i < o->clients; i++) {
        w[i] = (worker){.o = o, .index = i, .lsn = lsn};
        pthread_create(&w[i].thread, NULL, run_worker, &w[i]);
    }
    pthread_barrier_wait(&start_line);
    *start = now_ns();
    int failed = 0;
    for (int i = 0; i < o->clients; i++) {
        pthread_join(w[i].thread, NULL);
        if (w[i].error[0]) { fprintf(stderr, "layergate-cbench: client %d: %s\n", i, w[i].error); failed = 1; }
        for (int b = 0; b < BUCKETS; b++) all->counts[b] += w[i].h.counts[b];
        if (w[i].h.total && (all->total == 0 || w[i].h.min < all->min)) all->min = w[i].h.min;
        if (w[i].h.max > all->max) all->max = w[i].h.max;
        all->total += w[i].h.total;
        all->sum += w[i].h.sum;
    }
    pthread_barrier_destroy(&start_line);
    free(w);
    return failed;
}

static int usage(FILE *to, int code) {
    fprintf(to,
            "usage: layergate-cbench [-s SOCKET] [-c CLIENTS] [-P DEPTH] [-t SECONDS] [--epoll] [--redis] [--to-last-byte] [--rate R] [--pages N] [--tenant ID] [--token JWT] [-q|--csv]\n"
            "  -s SOCKET     layergated's socket (default ./.layergate/layergate.sock)\n"
            "  -c CLIENTS    connections (default 1): a thread each, or all on one thread with --epoll\n"
            "  -P DEPTH      GetPage requests per pipelined batch (default 1; -d is the same)\n"
            "  -t SECONDS    how long to run (default 5)\n"
            "  --epoll       one thread and an epoll set for every connection, as redis-benchmark runs;\n"
            "                a batch's latency runs from just before its send to the first event of its\n"
            "                answers, before they are read and parsed, as redis-benchmark measures\n"
            "  --redis       the baseline: the --epoll client against redis-server at SOCKET, GET of 8 KiB\n"
            "                values (SET first, keys lg:page:0...N-1) in place of GetPage\n"
            "  --to-last-byte  with --epoll: a batch's latency ends once its last answer is read and\n"
            "                parsed (without it, as redis-benchmark measures: at the first event of its answers)\n"
            "  --rate R      with --epoll: each connection's batches fall due R times a second (Poisson),\n"
            "                answered or not, each latency from its due time (an open loop; default: the\n"
            "                next batch goes out when the last is answered); batches due and not sent by\n"
            "                the end count as waiting until it; at least one due per connection in the run\n"
            "  --pages N     distinct pages, preloaded and read at random (default 1000)\n"
            "  --tenant ID   (default be0c0000000000000000000000000002, the one `layergate bench` uses)\n"
            "  --token JWT   sent with every request (default: $LAYERGATE_TOKEN); the preload needs admin\n"
            "                when the tenant is missing, the reads only tenant\n"
            "  -q            one line, like redis-benchmark -q; --csv: redis-benchmark's CSV plus p99.9\n");
    return code;
}

int main(int argc, char **argv) {
    options o = {.socket = "./.layergate/layergate.sock", .tenant = "be0c0000000000000000000000000002",
                 .clients = 1, .depth = 1, .pages = 1000, .seconds = 5, .token = getenv("LAYERGATE_TOKEN")};
    const char *rate = NULL;  /* --rate, checked once -t is known */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-q") == 0) o.quiet = true;
        else if (strcmp(a, "--csv") == 0) o.csv = true;
        else if (strcmp(a, "--epoll") == 0) o.epoll = true;
        else if (strcmp(a, "--redis") == 0) o.redis = o.epoll = true;
        else if (strcmp(a, "--to-last-byte") == 0) o.latency_to_last_byte = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(stdout, 0);
        else if (v == NULL) return usage(stderr, 2);
        else if (strcmp(a, "-s") == 0) o.socket = v, i++;
        else if (strcmp(a, "-c") == 0) o.clients = atoi(v), i++;
        else if (strcmp(a, "-P") == 0 || strcmp(a, "-d") == 0) o.depth = atoi(v), i++;
        else if (strcmp(a, "-t") == 0) o.seconds = atof(v), i++;
        else if (strcmp(a, "--rate") == 0) rate = v, i++;
        else if (strcmp(a, "--pages") == 0) o.pages = atoi(v), i++;
        else if (strcmp(a, "--tenant") == 0) o.tenant = v, i++;
        else if (strcmp(a, "--token") == 0) o.token = v, i++;
        else return usage(stderr, 2);
    }
    if (o.clients < 1 || o.depth < 1 || o.pages < 1 || o.seconds <= 0) return usage(stderr, 2);
    if (rate && (o.rate = parse_rate(rate, o.seconds)) < 0) {
        fprintf(stderr, "layergate-cbench: --rate %s: a number of batches a second, at least one due per connection in "
                        "the run (%g s), at most 10,000,000\n", rate, o.seconds);
        return 2;
    }
    if (o.rate > 0 && !o.epoll) {
        fprintf(stderr, "layergate-cbench: --rate is for --epoll\n");
        return 2;
    }
    /* Due times kept to the microsecond, not to a thread's default 50 µs of timer slack. */
    if (o.rate > 0) prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    if (o.latency_to_last_byte && !o.epoll) {
        fprintf(stderr, "layergate-cbench: --to-last-byte is for --epoll (a thread per connection always measures to the last byte)\n");
        return 2;
    }
    uint64_t lsn = 0;
    if (o.redis) {
        char error[600];
        if (preload_redis(&o, error, sizeof error) != 0) {
            fprintf(stderr, "layergate-cbench: preloading redis: %s\n", error);
            return 1;
        }
    } else if (preload(&o, &lsn) != 0) {
        return 1;
    }
    const char *name = o.redis ? "REDIS_GET" : "GET_PAGE";

    histogram *all = calloc(1, sizeof *all);
    if (all == NULL) return 1;
    uint64_t start = now_ns();
    int failed = 0;
    uint64_t unsent = 0;  /* --rate: requests due and never sent, counted in `all` as waiting until the end */
    if (o.epoll) {
        char error[600];
        if (run_epoll(&o, lsn, all, &unsent, error, sizeof error) != 0) {
            fprintf(stderr, "layergate-cbench: %s\n", error);
            failed = 1;
        }
    } else {
        failed = run_threads(&o, lsn, all, &start);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    /* An open loop's run is its length, even when its last batch fell due early. */
    if (o.rate > 0 && secs < o.seconds) secs = o.seconds;
    if (!failed && all->total == 0) fprintf(stderr, "layergate-cbench: no request was made in the run\n");
    if (failed || all->total == 0) return 1;
    uint64_t done = all->total - unsent;
    double rps = (double)done / secs;
    double ms = 1e-6;
    double avg = (double)(all->sum / all->total) * ms, p50 = (double)percentile(all, 0.5) * ms;
    double p95 = (double)percentile(all, 0.95) * ms, p99 = (double)percentile(all, 0.99) * ms;
    double p999 = (double)percentile(all, 0.999) * ms;
    if (o.csv) {
        printf("\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\",\"p999_latency_ms\"\n");
        printf("\"%s\",\"%.2f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\",\"%.3f\"\n", name, rps, avg,
               (double)all->min * ms, p50, p95, p99, (double)all->max * ms, p999);
    } else {
        if (!o.quiet) {
            printf("====== %s ======\n", name);
            printf("  %" PRIu64 " requests completed in %.2f seconds\n", done, secs);
            printf("  %d parallel clients\n  %d bytes payload\n  pipeline %d\n\n", o.clients, LG_PAGE_SIZE, o.depth);
            printf("Summary:\n  throughput summary: %.2f requests per second\n  latency summary (msec):\n", rps);
            printf("%13s %9s %9s %9s %9s %9s %9s\n", "avg", "min", "p50", "p95", "p99", "p99.9", "max");
            printf("%13.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", avg, (double)all->min * ms, p50, p95, p99, p999,
                   (double)all->max * ms);
        }
        printf("%s: %.2f requests per second, p50=%.3f msec, p99=%.3f msec, p99.9=%.3f msec "
               "(%d connections, depth %d, %" PRIu64 " requests, 8 KiB pages)\n",
               name, rps, p50, p99, p999, o.clients, o.depth, done);
    }
    if (unsent > 0)
        printf("%" PRIu64 " more requests fell due before the end and were never sent (the server fell behind): the "
               "percentiles count each as waiting until the end\n", unsent);
    free(all);
    return 0;
}
