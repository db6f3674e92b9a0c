/*
 * The one-thread epoll client that layergate-cbench --epoll and
 * layergate-pagebench get --epoll share, in the shape of redis-benchmark:
 * every connection sits on one epoll set, writes a batch of D requests at
 * once, reads until all D answers are in, and only then writes the next
 * batch. What a request is and what makes an answer right is the workload's
 * (`epoll_work`); the connections, the sends, the reads and the clock are here.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct conn_state {
    int fd;
    unsigned char *out;  /* the batch being written */
    size_t out_len, out_sent;
    unsigned char *in;   /* answers read and not yet taken */
    size_t in_len, in_cap;
    int pending;         /* answers still due for this batch */
    uint64_t sent_at;
    uint64_t readable_at; /* the first event of this batch's answers; 0: none yet */
    bool done;
    bool want_out;       /* EPOLLOUT is in the set: a batch is waiting for room */
} conn_state;

static int fail(char *error, size_t len, const char *what, int err) {
    snprintf(error, len, "%s: %s", what, strerror(err));
    return -1;
}

/* connect_unix's failure, named: EAGAIN is a backlog that stayed full. */
int connect_failed(char *error, size_t len, const char *path, int err) {
    if (err != EAGAIN) return fail(error, len, path, err);
    snprintf(error, len, "%s: the server accepted no connection for 10 s (its accept backlog stayed full)", path);
    return -1;
}

int connect_unix(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    /* Blocking, so that a full accept backlog (hundreds of connections opened at once)
     * is waited out, for up to 10 s (SO_SNDTIMEO; then EAGAIN), not an error at once
     * as a non-blocking connect would answer. Non-blocking after. */
    struct timeval wait = {.tv_sec = 10}, none = {0};
    int rc = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, sizeof wait);
    if (rc == 0) {
        do rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
        while (rc != 0 && errno == EINTR);
        if (rc != 0 && errno == EISCONN) rc = 0;  /* an interrupted attempt that had completed */
    }
    if (rc != 0 || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void fill_batch(const epoll_work *w, int i, conn_state *c) {
    c->out_len = 0;
    for (int d = 0; d < w->depth; d++) c->out_len += w->request(w->ctx, i, d, c->out + c->out_len);
    c->out_sent = 0;
    c->pending = w->depth;
}

/* Asks for EPOLLOUT only while a batch waits for room, as redis-benchmark
 * does. Why: with EPOLLOUT always in an edge-triggered set, every request the
 * server reads frees room and wakes this thread for nothing (one wake-up per
 * request: 9 % of the server's CPU went to it in recv during cold reads). */
static int want_out(int ep, int i, conn_state *c, bool want) {
    if (c->want_out == want) return 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) return -1;
    c->want_out = want;
    return 0;
}

/* Writes what is left of the batch; 0, or -1 on a broken connection. */
static int flush_out(int ep, int i, conn_state *c) {
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EINTR ? want_out(ep, i, c, true) : -1;
        c->out_sent += (size_t)n;
    }
    return want_out(ep, i, c, false);
}

/* Hands the whole answers read so far to the workload; 0, or -1 with `error` set. */
static int take(const epoll_work *w, int i, conn_state *c, char *error, size_t len) {
    int answers = 0;
    long taken = w->take(w->ctx, i, c->in, c->in_len, &answers, error, len);
    if (taken < 0) return -1;
    memmove(c->in, c->in + taken, c->in_len - (size_t)taken);
    c->in_len -= (size_t)taken;
    c->pending -= answers;
    if (c->pending < 0) {
        snprintf(error, len, "more answers than requests");
        return -1;
    }
    return 0;
}

int run_epoll_work(const epoll_work *w, histogram *out, char *error, size_t error_len) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return fail(error, error_len, "epoll_create1", errno);
    conn_state *cs = calloc((size_t)w->clients, sizeof *cs);
    int rc = cs ? 0 : fail(error, error_len, "calloc", ENOMEM);
    for (int i = 0; rc == 0 && i < w->clients; i++) {
        conn_state *c = &cs[i];
        c->fd = -1;
        c->out = malloc(w->request_max * (size_t)w->depth);
        c->in_cap = (size_t)w->depth * w->answer_max + w->answer_limit;
        c->in = malloc(c->in_cap);
        if (!c->out || !c->in) { rc = fail(error, error_len, "malloc", ENOMEM); break; }
        c->fd = connect_unix(w->socket);
        if (c->fd < 0) { rc = connect_failed(error, error_len, w->socket, errno); break; }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) rc = fail(error, error_len, "epoll_ctl", errno);
    }
    uint64_t deadline = now_ns() + (uint64_t)(w->seconds * 1e9);
    for (int i = 0; rc == 0 && i < w->clients; i++) {
        fill_batch(w, i, &cs[i]);
        cs[i].sent_at = now_ns();
        if (flush_out(ep, i, &cs[i]) != 0) rc = fail(error, error_len, "send", errno);
    }
    int running = rc == 0 ? w->clients : 0;
    struct epoll_event events[64];
    while (rc == 0 && running > 0) {
        int n = epoll_wait(ep, events, 64, 1000);
        if (n < 0 && errno != EINTR) rc = fail(error, error_len, "epoll_wait", errno);
        for (int e = 0; rc == 0 && e < n; e++) {
            int i = (int)events[e].data.u32;
            conn_state *c = &cs[i];
            if (c->done) continue;
            if (w->latency_to_first_byte && (events[e].events & EPOLLIN) && c->readable_at == 0) c->readable_at = now_ns();
            if ((events[e].events & EPOLLOUT) && flush_out(ep, i, c) != 0) { rc = fail(error, error_len, "send", errno); break; }
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
                /* Answers read on an event for EPOLLOUT alone: their first bytes mark the time. */
                if (w->latency_to_first_byte && c->readable_at == 0) c->readable_at = now_ns();
                c->in_len += (size_t)got;
                if (take(w, i, c, error, error_len) != 0) { rc = -1; break; }
                if (c->pending > 0) continue;
                uint64_t now = now_ns();
                record(out, (w->latency_to_first_byte && c->readable_at ? c->readable_at : now) - c->sent_at, (uint64_t)w->depth);
                c->readable_at = 0;
                if (now >= deadline) {
                    c->done = true;
                    running--;
                    break;
                }
                fill_batch(w, i, c);
                c->sent_at = now_ns();
                if (flush_out(ep, i, c) != 0) { rc = fail(error, error_len, "send", errno); break; }
                /* The batch's answers are all in: the recv that would say EAGAIN is saved. The
                 * next batch's answers, even those already here, raise an edge of their own
                 * (every arrival on a socket does, under EPOLLET). */
                break;
            }
        }
        if (rc == 0 && n == 0 && now_ns() > deadline + 10000000000ull) {
            rc = -1;
            snprintf(error, error_len, "no answer for 10 s past the end");
        }
    }
    for (int i = 0; cs && i < w->clients; i++) {
        if (cs[i].fd >= 0) close(cs[i].fd);
        free(cs[i].out);
        free(cs[i].in);
    }
    free(cs);
    close(ep);
    return rc;
}
