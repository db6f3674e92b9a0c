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
#include <sys/timerfd.h>
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
    pacer pace;          /* w->rate: when its batches fall due */
    bool idle;           /* w->rate: its last batch answered, the next not due yet (pace.due) */
    uint64_t unsent;     /* w->rate: requests due before the deadline and never sent */
} conn_state;

enum { TIMER = UINT32_MAX };  /* the epoll data of the timer that wakes idle connections */

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

/* Writes connection i's next batch, its latency counted from `due` (0: from now). */
static int start_batch(const epoll_work *w, int ep, int i, conn_state *c, uint64_t due) {
    fill_batch(w, i, c);
    c->sent_at = due ? due : now_ns();
    c->idle = false;
    return flush_out(ep, i, c);
}

/* Connection i's batch is all answered at `now`: the next goes out now (a closed
 * loop, or already due), waits for its due time (idle), or the run is over (a
 * closed loop's deadline passed, or the next would fall due past it): the
 * connection is done. With a rate, what fell due before the deadline is still
 * sent until the grace after it ends, then counted unsent (pacer_drain).
 * 0, or -1 on a broken connection. */
static int next_batch(const epoll_work *w, int ep, int i, conn_state *c, uint64_t now, uint64_t deadline, histogram *out) {
    uint64_t due = w->rate > 0 ? pacer_next(&c->pace) : 0;
    if (w->rate > 0 ? due >= deadline : now >= deadline) {
        c->done = true;
        return 0;
    }
    if (w->rate > 0 && now >= deadline + drain_grace_ns) {
        c->done = true;
        record(out, now - due, (uint64_t)w->depth);
        c->unsent = (uint64_t)w->depth + pacer_drain(&c->pace, now, deadline, out, (uint64_t)w->depth);
        return 0;
    }
    if (due > now) {
        c->idle = true;
        return 0;
    }
    return start_batch(w, ep, i, c, due);
}

/* w->rate: sends every idle connection's batch that has fallen due, and sets the
 * timer for the earliest still to come. 0, or -1 with `error` filled in. */
static int send_due(const epoll_work *w, int ep, int timer, conn_state *cs, uint64_t *armed, char *error, size_t len) {
    uint64_t now = now_ns(), earliest = UINT64_MAX;
    for (int i = 0; i < w->clients; i++) {
        conn_state *c = &cs[i];
        if (c->done || !c->idle) continue;
        if (c->pace.due > now) {
            if (c->pace.due < earliest) earliest = c->pace.due;
        } else if (start_batch(w, ep, i, c, c->pace.due) != 0) {
            return fail(error, len, "send", errno);
        }
    }
    if (earliest == UINT64_MAX || earliest == *armed) return 0;
    struct itimerspec at = {.it_value = {.tv_sec = (time_t)(earliest / 1000000000u), .tv_nsec = (long)(earliest % 1000000000u)}};
    if (timerfd_settime(timer, TFD_TIMER_ABSTIME, &at, NULL) != 0) return fail(error, len, "timerfd_settime", errno);
    *armed = earliest;
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
    int timer = -1;
    uint64_t armed = 0;
    if (rc == 0 && w->rate > 0) {
        timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TIMER};
        if (timer < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev) != 0) rc = fail(error, error_len, "timerfd", errno);
    }
    uint64_t start = now_ns(), deadline = start + (uint64_t)(w->seconds * 1e9);
    for (int i = 0; rc == 0 && i < w->clients; i++) {
        if (w->rate > 0) {
            pacer_start(&cs[i].pace, w->rate, start, (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)) ^ w->seed);
            cs[i].idle = true;
            cs[i].done = pacer_next(&cs[i].pace) >= deadline;
        } else if (start_batch(w, ep, i, &cs[i], 0) != 0) {
            rc = fail(error, error_len, "send", errno);
        }
    }
    int running = 0;
    for (int i = 0; rc == 0 && i < w->clients; i++) running += !cs[i].done;
    struct epoll_event events[64];
    while (rc == 0 && running > 0) {
        if (w->rate > 0 && send_due(w, ep, timer, cs, &armed, error, error_len) != 0) { rc = -1; break; }
        int n = epoll_wait(ep, events, 64, 1000);
        if (n < 0 && errno != EINTR) rc = fail(error, error_len, "epoll_wait", errno);
        for (int e = 0; rc == 0 && e < n; e++) {
            if (events[e].data.u32 == TIMER) {
                uint64_t expired;
                if (read(timer, &expired, sizeof expired) < 0 && errno != EAGAIN) rc = fail(error, error_len, "timerfd", errno);
                armed = 0;
                continue;
            }
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
                if (next_batch(w, ep, i, c, now, deadline, out) != 0) { rc = fail(error, error_len, "send", errno); break; }
                if (c->done) running--;
                /* The batch's answers are all in: the recv that would say EAGAIN is saved. The
                 * next batch's answers, even those already here, raise an edge of their own
                 * (every arrival on a socket does, under EPOLLET). */
                break;
            }
        }
        if (rc == 0 && n == 0 && now_ns() > deadline + stall_limit_ns) {
            rc = -1;
            snprintf(error, error_len, "no answer for %llu s past the end", (unsigned long long)(stall_limit_ns / 1000000000u));
        }
    }
    for (int i = 0; cs && i < w->clients; i++) {
        if (w->unsent) *w->unsent += cs[i].unsent;
        if (cs[i].fd >= 0) close(cs[i].fd);
        free(cs[i].out);
        free(cs[i].in);
    }
    free(cs);
    if (timer >= 0) close(timer);
    close(ep);
    return rc;
}
