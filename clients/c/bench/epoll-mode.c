/*
 * layergate-cbench --epoll: the shape of redis-benchmark, on the epoll
 * driver (epoll-driver.c). Each connection writes a batch of D GetPage
 * requests at once; each answer is unpacked and checked to be an 8 KiB page,
 * as redis-benchmark parses each reply.
 *
 * --redis runs the same loop against redis-server as the baseline: a GET of
 * an 8 KiB value (RESP) in place of each GetPage, each reply checked to be an
 * 8 KiB bulk string. One client for both sides leaves the servers as the
 * only difference (redis-benchmark is another program, with its own costs).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct cbench_work {
    const options *o;
    uint64_t lsn;
    uint64_t *x;  /* each connection's xorshift state for its random keys */
} cbench_work;

static int fail(char *error, size_t len, const char *what, int err) {
    snprintf(error, len, "%s: %s", what, strerror(err));
    return -1;
}

/* RESP: GET lg:page:N, as an array of two bulk strings. */
static size_t redis_get(unsigned char *at, uint32_t n) {
    char name[32];
    int len = snprintf(name, sizeof name, "lg:page:%u", n);
    return (size_t)sprintf((char *)at, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len, name);
}

static size_t request(void *ctx, int i, int d, unsigned char *at) {
    cbench_work *w = ctx;
    uint64_t *x = &w->x[i];
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    uint32_t n = (uint32_t)(*x % (uint64_t)w->o->pages);
    if (w->o->redis) return redis_get(at, n);
    return page_request(at, (uint64_t)d + 1, w->o->tenant, w->o->token, key(n), w->lsn);
}

/* Takes every whole RESP reply: each must be an 8 KiB bulk string. */
static long take_redis_replies(const unsigned char *in, size_t len, int *answers, char *error, size_t error_len) {
    static const char head[] = "$8192\r\n";
    const size_t whole = sizeof head - 1 + LG_PAGE_SIZE + 2;
    size_t at = 0;
    while (len > at) {
        /* Checked on what has arrived: a short reply ("$-1", "-ERR") must not wait for bytes that never come. */
        size_t seen = len - at < sizeof head - 1 ? len - at : sizeof head - 1;
        if (memcmp(in + at, head, seen) != 0) {
            snprintf(error, error_len, "a redis reply that is not an 8 KiB value: %.40s", (const char *)in + at);
            return -1;
        }
        if (len - at < whole) break;
        (*answers)++;
        at += whole;
    }
    return (long)at;
}

static long take(void *ctx, int i, const unsigned char *in, size_t len, int *answers, char *error, size_t error_len) {
    cbench_work *w = ctx;
    if (w->o->redis) return take_redis_replies(in, len, answers, error, error_len);
    return take_pages(in, len, answers, NULL, NULL, i, NULL, error, error_len);
}

int preload_redis(const options *o, char *error, size_t error_len) {
    int fd = connect_unix(o->socket);
    if (fd < 0) return connect_failed(error, error_len, o->socket, errno);
    int flags = 0;  /* blocking from here on: a preload, not measured */
    if (ioctl(fd, FIONBIO, &flags) != 0) { close(fd); return fail(error, error_len, "ioctl", errno); }
    unsigned char *value = malloc(LG_PAGE_SIZE + 128);
    int rc = value ? 0 : fail(error, error_len, "malloc", ENOMEM);
    for (int n = 0; rc == 0 && n < o->pages; n++) {
        char name[32];
        int len = snprintf(name, sizeof name, "lg:page:%d", n);
        int h = sprintf((char *)value, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len, name, LG_PAGE_SIZE);
        memset(value + h, 'a' + n % 26, LG_PAGE_SIZE);
        memcpy(value + h + LG_PAGE_SIZE, "\r\n", 2);
        size_t total = (size_t)h + LG_PAGE_SIZE + 2, sent = 0;
        while (rc == 0 && sent < total) {
            ssize_t w = send(fd, value + sent, total - sent, MSG_NOSIGNAL);
            if (w < 0 && errno != EINTR) rc = fail(error, error_len, "send", errno);
            if (w > 0) sent += (size_t)w;
        }
        char ok[5];
        size_t got = 0;
        while (rc == 0 && got < sizeof ok) {
            ssize_t r = recv(fd, ok + got, sizeof ok - got, 0);
            if (r <= 0 && !(r < 0 && errno == EINTR)) rc = fail(error, error_len, "recv", r == 0 ? ECONNRESET : errno);
            if (r > 0) got += (size_t)r;
        }
        if (rc == 0 && memcmp(ok, "+OK\r\n", 5) != 0) {
            snprintf(error, error_len, "redis refused SET %s: %.5s", name, ok);
            rc = -1;
        }
    }
    free(value);
    close(fd);
    return rc;
}

int run_epoll(const options *o, uint64_t lsn, histogram *out, uint64_t *unsent, char *error, size_t error_len) {
    cbench_work w = {.o = o, .lsn = lsn, .x = calloc((size_t)o->clients, sizeof(uint64_t))};
    if (w.x == NULL) return fail(error, error_len, "calloc", ENOMEM);
    for (int i = 0; i < o->clients; i++) w.x[i] = 88172645463325252ull ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);
    /* A RESP GET is well under a GetPage frame; a reply of 8 KiB and its header under an answer. */
    epoll_work e = {.socket = o->socket, .clients = o->clients, .depth = o->depth, .seconds = o->seconds,
                    .request_max = page_request_max(o->tenant, o->token), .answer_max = page_answer_max(),
                    .answer_limit = page_answer_limit(),
                    .request = request, .take = take, .ctx = &w, .latency_to_first_byte = !o->latency_to_last_byte,
                    .rate = o->rate, .unsent = unsent};
    int rc = run_epoll_work(&e, out, error, error_len);
    free(w.x);
    return rc;
}
