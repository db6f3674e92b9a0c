/* What the benches share: options, the latency histogram, the pages' keys, the epoll client. */
#ifndef LAYERGATE_CBENCH_H
#define LAYERGATE_CBENCH_H

#include <layergate.h>

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Log-linear latency histogram in ns: 2^SUB_BITS buckets per power of two, under 1% error. */
enum { SUB_BITS = 7, SUB = 1 << SUB_BITS, BUCKETS = 64 * SUB };

typedef struct histogram {
    uint64_t counts[BUCKETS];
    uint64_t total, min, max;
    long double sum;
} histogram;

static inline int bucket_of(uint64_t v) {
    if (v < SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - SUB_BITS;
    return (shift + 1) * SUB + (int)((v >> shift) - SUB);
}

static inline uint64_t bucket_high(int b) {  /* the largest value that lands in bucket b */
    if (b < SUB) return (uint64_t)b;
    int shift = b / SUB - 1;
    uint64_t base = (uint64_t)(b % SUB + SUB) << shift;
    return base + ((uint64_t)1 << shift) - 1;
}

static inline void record(histogram *h, uint64_t ns, uint64_t n) {
    h->counts[bucket_of(ns)] += n;
    if (h->total == 0 || ns < h->min) h->min = ns;
    if (ns > h->max) h->max = ns;
    h->total += n;
    h->sum += (long double)ns * n;
}

static inline uint64_t percentile(const histogram *h, double q) {
    uint64_t want = (uint64_t)(q * (double)h->total), seen = 0;
    if (want >= h->total) want = h->total - 1;
    for (int b = 0; b < BUCKETS; b++) {
        seen += h->counts[b];
        if (seen > want) return bucket_high(b) < h->max ? bucket_high(b) : h->max;
    }
    return h->max;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * --rate: an open loop, as pagebench's --per-target-rate-limit. A client's
 * requests fall due at Poisson arrivals of `rate` a second, whether or not the
 * one before is answered; each latency runs from its due time, so an answer
 * that comes late also counts against the requests that queued behind it (no
 * coordinated omission). Why: a closed loop at 8 clients measures how many
 * requests a second the machine finishes (its latency is the clients over the
 * throughput), and its baseline, 8 threads of preads, is as CPU-bound on 2
 * cores as the server; at one offered load both answer the question "how long
 * does a read take".
 */
typedef struct pacer {
    double mean_ns;  /* between two requests, on average */
    uint64_t due, x;
} pacer;

static inline void pacer_start(pacer *p, double rate, uint64_t start, uint64_t seed) {
    *p = (pacer){.mean_ns = 1e9 / rate, .due = start, .x = seed | 1};
}

/* The due time of the next request. */
static inline uint64_t pacer_next(pacer *p) {
    p->x ^= p->x << 13, p->x ^= p->x >> 7, p->x ^= p->x << 17;
    double u = ((double)(p->x >> 11) + 0.5) / 9007199254740992.0;  /* (0, 1) */
    p->due += (uint64_t)(-log(u) * p->mean_ns);
    return p->due;
}

/* Requests that fell due before the deadline are still sent for this long
 * after it (the run's last ones are often a little late); what is left then is
 * counted by pacer_drain. */
static const uint64_t drain_grace_ns = 1000000000u;

/* No answer for this long past the run's end: the server stopped, and the
 * client gives up with an error instead of waiting for it. */
static const uint64_t stall_limit_ns = 10000000000ull;

/* The run ended at `end` (its deadline and the grace after it passed) with
 * requests that fell due before `deadline` never sent: a server or disk that
 * stopped keeping up. Each is
 * counted in h (per_due requests each: a batch) as waiting until the end, a
 * lower bound, not left out (that would hide the latency of the overload);
 * returns how many requests. */
static inline uint64_t pacer_drain(pacer *p, uint64_t end, uint64_t deadline, histogram *h, uint64_t per_due) {
    uint64_t n = 0;
    for (uint64_t due = pacer_next(p); due < deadline; due = pacer_next(p), n += per_due)
        record(h, end > due ? end - due : 0, per_due);
    return n;
}

/* Parses --rate's value: a finite number of requests a second, at least one
 * due per client in `seconds`, at most 10 million a second; else -1. */
static inline double parse_rate(const char *v, double seconds) {
    char *end;
    double r = strtod(v, &end);
    if (end == v || *end != '\0' || !(r * seconds >= 1) || !(r <= 1e7)) return -1;
    return r;
}

typedef struct options {
    const char *socket;
    const char *tenant;
    int clients, depth, pages;
    double seconds;
    bool quiet, csv;
    bool epoll;  /* one thread, every connection on an epoll set, like redis-benchmark */
    bool redis;  /* the same client against redis-server: GET of 8 KiB values, the baseline */
    bool latency_to_last_byte;  /* --epoll: a batch's latency ends with its last answer read, not its first readable */
    double rate;  /* --epoll: each connection's batches a second, an open loop (a pacer); 0: closed */
    const char *token;  /* NULL: none */
} options;

static inline lg_page_key key(uint32_t block) {
    return (lg_page_key){.spc_oid = 1663, .db_oid = 5, .rel_number = 2000, .fork = 0, .block = block};
}

/* A workload for the one-thread epoll client (epoll-driver.c). */
typedef struct epoll_work {
    const char *socket;
    int clients, depth;
    double seconds;
    size_t request_max;   /* the most one request takes */
    size_t answer_max;    /* the most one answer takes when all is well */
    size_t answer_limit;  /* the most any one answer may take (an error with its message) */
    /* Writes request d of connection i's next batch at `at`; returns its length. */
    size_t (*request)(void *ctx, int i, int d, unsigned char *at);
    /* Takes the whole answers at the start of in[0, len) for connection i, adding
     * them to *answers: returns the bytes taken, or -1 with `error` filled in. */
    long (*take)(void *ctx, int i, const unsigned char *in, size_t len, int *answers, char *error, size_t error_len);
    void *ctx;
    /* > 0: each connection's batches fall due at this rate a second (a pacer), and
     * their latency runs from the due time; 0: a closed loop, from the send. */
    double rate;
    uint64_t seed;      /* mixed into each connection's pacer */
    uint64_t *unsent;   /* with rate: where to add the batches that fell due and were never sent (pacer_drain) */
    /* As redis-benchmark measures: a batch's latency ends when the first of its
     * answers is readable (the epoll event), before any is read or parsed.
     * False: when the last answer is read and taken (checked). */
    bool latency_to_first_byte;
} epoll_work;

/* Runs w for w->seconds: every connection sends a batch of w->depth requests at
 * once and the next when all of its answers are in (with w->rate, when it falls
 * due too); each batch's latency, from just before its send (its due time),
 * goes to `out`. Returns 0, or -1 with `error` filled in. */
int run_epoll_work(const epoll_work *w, histogram *out, char *error, size_t error_len);

/* A non-blocking connection to a Unix socket, or -1 with errno set (EAGAIN: the
 * server's accept backlog stayed full for 10 s). connect_failed writes that
 * failure into `error` and returns -1. */
int connect_unix(const char *path);
int connect_failed(char *error, size_t len, const char *path, int err);

/* GetPage frames (page-frames.c). */
size_t page_request_max(const char *tenant, const char *token);
size_t page_answer_max(void);
size_t page_answer_limit(void);
/* Writes a GetPage request frame at `at` (page_request_max bytes free; LG_LSN_LATEST: latest); returns its length. */
size_t page_request(unsigned char *at, uint64_t id, const char *tenant, const char *token, lg_page_key k, uint64_t lsn);
/* Checks a page answered to request `id` on connection `conn`: 0, or -1 with `error` filled in. */
typedef int (*page_check)(void *ctx, int conn, uint64_t id, const unsigned char *page, char *error, size_t error_len);
/* Slots of a count of server errors by code: the codes of layergate.proto's ErrorCode
 * that lg_status names (1 to 13), any other code counted in the last slot (as
 * LG_UNKNOWN_SERVER_ERROR, as liblayergate's calls report it). */
enum { SERVER_CODES = LG_UNKNOWN_SERVER_ERROR + 1 };
/* The slot of server error `code`. */
int server_code_slot(long code);
/* An epoll_work `take` for GetPage answers: each must be an 8 KiB page, and pass `check` when given.
 * With `errors`, an error answer is counted there (by server_code_slot) and taken as an answer. */
long take_pages(const unsigned char *in, size_t len, int *answers, page_check check, void *ctx, int conn,
                unsigned long *errors, char *error, size_t error_len);

/* Runs the epoll mode for o->seconds: every connection sends a batch of o->depth
 * GetPage requests at once and sends the next when all of its answers are in
 * (with o->rate, when it falls due too; those due and never sent are added to
 * *unsent). Returns 0, or -1 with `error` filled in. */
int run_epoll(const options *o, uint64_t lsn, histogram *out, uint64_t *unsent, char *error, size_t error_len);

/* --redis: SETs o->pages values of 8 KiB (keys "lg:page:N") on the redis-server at
 * o->socket, which the epoll mode then GETs at random. Returns 0, or -1 with `error` filled in. */
int preload_redis(const options *o, char *error, size_t error_len);

#endif
