/*
 * layergate-cbench --epoll: the shape of redis-benchmark. One thread holds
 * every connection on one epoll set; each connection writes a batch of D
 * GetPage requests at once, reads until all D answers are in, and only then
 * writes the next batch. Requests go out with protobuf-c over plain
 * non-blocking sockets (not liblayergate, whose calls block), and each answer
 * is unpacked and checked to be an 8 KiB page, as redis-benchmark parses each
 * reply.
 *
 * --redis runs the same loop against redis-server as the baseline: a GET of
 * an 8 KiB value (RESP) in place of each GetPage, each reply checked to be an
 * 8 KiB bulk string. One client for both sides leaves the servers as the
 * only difference (redis-benchmark is another program, with its own costs).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <layergate.pb-c.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct client {
    int fd;
    uint64_t x;                 /* xorshift state for the random keys */
    unsigned char *out;         /* the batch being written */
    size_t out_len, out_sent;
    unsigned char *in;          /* answers read and not yet taken */
    size_t in_len, in_cap;
    int pending;                /* answers still due for this batch */
    uint64_t sent_at;
    bool done;
} client;

/* The most an answer may be: an 8 KiB page and its envelope, or an error message. */
enum { MAX_ANSWER = 64 << 10 };

static int fail(char *error, size_t len, const char *what, int err) {
    snprintf(error, len, "%s: %s", what, strerror(err));
    return -1;
}

static int connect_unix(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    /* A Unix socket connects at once or fails (EAGAIN: the backlog is full). */
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* RESP: GET lg:page:N, as an array of two bulk strings. */
static size_t redis_get(unsigned char *at, uint32_t n) {
    char name[32];
    int len = snprintf(name, sizeof name, "lg:page:%u", n);
    return (size_t)sprintf((char *)at, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len, name);
}

/* Encodes the next batch of D requests into c->out. */
static void fill_batch(client *c, const options *o, uint64_t lsn) {
    c->out_len = 0;
    for (int d = 0; d < o->depth; d++) {
        c->x ^= c->x << 13, c->x ^= c->x >> 7, c->x ^= c->x << 17;
        if (o->redis) {
            c->out_len += redis_get(c->out + c->out_len, (uint32_t)(c->x % (uint64_t)o->pages));
            continue;
        }
        lg_page_key k = key((uint32_t)(c->x % (uint64_t)o->pages));
        Layergate__V1__PageKey pk = LAYERGATE__V1__PAGE_KEY__INIT;
        pk.spc_oid = k.spc_oid, pk.db_oid = k.db_oid, pk.rel_number = k.rel_number, pk.fork = k.fork, pk.block = k.block;
        Layergate__V1__GetPageRequest gp = LAYERGATE__V1__GET_PAGE_REQUEST__INIT;
        gp.tenant_id = (char *)o->tenant, gp.key = &pk, gp.lsn = lsn;
        Layergate__V1__Request r = LAYERGATE__V1__REQUEST__INIT;
        r.request_id = (uint64_t)d + 1;
        if (o->token) r.auth_token = (char *)o->token;
        r.body_case = LAYERGATE__V1__REQUEST__BODY_GET_PAGE, r.get_page = &gp;
        unsigned char *at = c->out + c->out_len;
        size_t n = layergate__v1__request__pack(&r, at + 4);
        at[0] = (unsigned char)(n >> 24), at[1] = (unsigned char)(n >> 16), at[2] = (unsigned char)(n >> 8), at[3] = (unsigned char)n;
        c->out_len += 4 + n;
    }
    c->out_sent = 0;
    c->pending = o->depth;
}

/* Writes what is left of the batch; 0, or -1 on a broken connection. */
static int flush_out(client *c) {
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->out_sent += (size_t)n;
    }
    return 0;
}

/* Takes every whole RESP reply from c->in: each must be an 8 KiB bulk string. */
static int take_redis_replies(client *c, char *error, size_t len) {
    static const char head[] = "$8192\r\n";
    const size_t whole = sizeof head - 1 + LG_PAGE_SIZE + 2;
    size_t at = 0;
    while (c->in_len > at) {
        /* Checked on what has arrived: a short reply ("$-1", "-ERR") must not wait for bytes that never come. */
        size_t seen = c->in_len - at < sizeof head - 1 ? c->in_len - at : sizeof head - 1;
        if (memcmp(c->in + at, head, seen) != 0) {
            snprintf(error, len, "a redis reply that is not an 8 KiB value: %.40s", (const char *)c->in + at);
            return -1;
        }
        if (c->in_len - at < whole) break;
        c->pending--;
        at += whole;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

/* Takes every whole answer from c->in; 0, or -1 with `error` set. */
static int take_answers(client *c, const options *o, char *error, size_t len) {
    if (o->redis) return take_redis_replies(c, error, len);
    size_t at = 0;
    while (c->in_len - at >= 4) {
        const unsigned char *h = c->in + at;
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n > MAX_ANSWER) { snprintf(error, len, "an answer of %zu bytes", n); return -1; }
        if (c->in_len - at < 4 + n) break;
        Layergate__V1__Response *r = layergate__v1__response__unpack(NULL, n, h + 4);
        if (r == NULL) { snprintf(error, len, "an answer that does not decode"); return -1; }
        bool page = r->body_case == LAYERGATE__V1__RESPONSE__BODY_GET_PAGE && r->get_page && r->get_page->page.len == LG_PAGE_SIZE;
        if (!page) {
            if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR && r->error)
                snprintf(error, len, "server error %d: %s", (int)r->error->code, r->error->message);
            else
                snprintf(error, len, "an answer that is not an 8 KiB page");
        }
        layergate__v1__response__free_unpacked(r, NULL);
        if (!page) return -1;
        c->pending--;
        at += 4 + n;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

int preload_redis(const options *o, char *error, size_t error_len) {
    int fd = connect_unix(o->socket);
    if (fd < 0) return fail(error, error_len, o->socket, errno);
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

int run_epoll(const options *o, uint64_t lsn, histogram *out, char *error, size_t error_len) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return fail(error, error_len, "epoll_create1", errno);
    /* The most a request takes: its header, the tenant id and the token with their
     * lengths, and under 64 bytes of ids, key and LSN. */
    size_t frame_max = 4 + 64 + strlen(o->tenant) + 8 + (o->token ? strlen(o->token) + 8 : 0);
    client *cs = calloc((size_t)o->clients, sizeof *cs);
    int rc = cs ? 0 : fail(error, error_len, "calloc", ENOMEM);
    for (int i = 0; rc == 0 && i < o->clients; i++) {
        client *c = &cs[i];
        c->fd = -1;
        c->x = 88172645463325252ull ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);
        c->out = malloc(frame_max * (size_t)o->depth);
        c->in_cap = (size_t)o->depth * (LG_PAGE_SIZE + 256) + MAX_ANSWER;
        c->in = malloc(c->in_cap);
        if (!c->out || !c->in) { rc = fail(error, error_len, "malloc", ENOMEM); break; }
        c->fd = connect_unix(o->socket);
        if (c->fd < 0) { rc = fail(error, error_len, o->socket, errno); break; }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) rc = fail(error, error_len, "epoll_ctl", errno);
    }
    uint64_t deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
    for (int i = 0; rc == 0 && i < o->clients; i++) {
        fill_batch(&cs[i], o, lsn);
        cs[i].sent_at = now_ns();
        if (flush_out(&cs[i]) != 0) rc = fail(error, error_len, "send", errno);
    }
    int running = rc == 0 ? o->clients : 0;
    struct epoll_event events[64];
    while (rc == 0 && running > 0) {
        int n = epoll_wait(ep, events, 64, 1000);
        if (n < 0 && errno != EINTR) rc = fail(error, error_len, "epoll_wait", errno);
        for (int e = 0; rc == 0 && e < n; e++) {
            client *c = events[e].data.ptr;
            if (c->done) continue;
            if ((events[e].events & EPOLLOUT) && flush_out(c) != 0) { rc = fail(error, error_len, "send", errno); break; }
            /* Edge-triggered: read until the socket is empty. */
            for (;;) {
                if (c->in_len == c->in_cap) { rc = -1; snprintf(error, error_len, "more answers than requests"); break; }
                ssize_t got = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
                if (got == 0) { rc = -1; snprintf(error, error_len, "the server closed a connection"); break; }
                if (got < 0) {
                    if (errno == EAGAIN) break;
                    if (errno == EINTR) continue;
                    rc = fail(error, error_len, "recv", errno);
                    break;
                }
                c->in_len += (size_t)got;
                if (take_answers(c, o, error, error_len) != 0) { rc = -1; break; }
                if (c->pending < 0) { rc = -1; snprintf(error, error_len, "more answers than requests"); break; }
                if (c->pending > 0) continue;
                uint64_t now = now_ns();
                record(out, now - c->sent_at, (uint64_t)o->depth);
                if (now >= deadline) {
                    c->done = true;
                    running--;
                    break;
                }
                fill_batch(c, o, lsn);
                c->sent_at = now;
                if (flush_out(c) != 0) { rc = fail(error, error_len, "send", errno); break; }
            }
        }
        if (rc == 0 && n == 0 && now_ns() > deadline + 10000000000ull) {
            rc = -1;
            snprintf(error, error_len, "no answer for 10 s past the end");
        }
    }
    for (int i = 0; cs && i < o->clients; i++) {
        if (cs[i].fd >= 0) close(cs[i].fd);
        free(cs[i].out);
        free(cs[i].in);
    }
    free(cs);
    close(ep);
    return rc;
}
