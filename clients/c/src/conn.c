/* A connection: socket, deadlines, frames out and in, and the call's outcome. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LG_READ_CHUNK ((size_t)64 << 10)

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int normalised_timeout(int timeout_ms) { return timeout_ms == 0 ? LG_DEFAULT_TIMEOUT_MS : timeout_ms; }

/* -1: no deadline. */
static int64_t deadline_after(int timeout_ms) { return timeout_ms < 0 ? -1 : now_ms() + timeout_ms; }

/* Milliseconds left for poll: -1 = forever, 0 = time is up. */
static int remaining_ms(int64_t deadline) {
    if (deadline < 0) return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0) return 0;
    return left > 1000000 ? 1000000 : (int)left;
}

static void close_fd(lg_conn *c, const char *why) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->write_closed = false;
    c->out.start = c->out.end = 0;
    c->in.start = c->in.end = 0;
    snprintf(c->closed_reason, sizeof c->closed_reason, "%s", why);
}

lg_status lg__fail(lg_conn *c, lg_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof c->message, fmt, ap);
    va_end(ap);
    c->last_status = status;
    return status;
}

lg_status lg__ok(lg_conn *c) {
    c->last_status = LG_OK;
    c->message[0] = '\0';
    return LG_OK;
}

lg_status lg__begin(lg_conn *c) {
    c->server_code = 0;
    lg__ok(c);
    if (c->fd < 0) return lg__fail(c, LG_CONNECTION_CLOSED, "connection is closed: %s", c->closed_reason);
    return LG_OK;
}

lg_status lg__status_for_code(int code) {
    return code >= LG_INVALID_ARGUMENT && code <= LG_UNAUTHENTICATED ? (lg_status)code : LG_UNKNOWN_SERVER_ERROR;
}

lg_status lg__server_error(lg_conn *c, const Layergate__V1__Error *e, const char *context) {
    c->server_code = (int)e->code;
    lg_status s = lg__status_for_code((int)e->code);
    const char *name = s == LG_UNKNOWN_SERVER_ERROR ? "ERROR_CODE" : lg_status_name(s);
    if (s == LG_UNKNOWN_SERVER_ERROR)
        return lg__fail(c, s, "%s%s_%d: %s", context, name, (int)e->code, e->message ? e->message : "");
    return lg__fail(c, s, "%s%s: %s", context, name, e->message ? e->message : "");
}

static bool buf_reserve(lg_buf *b, size_t extra) {
    if (b->cap - b->end >= extra) return true;
    if (b->start > 0) {  /* slide the pending bytes to the front first */
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
        if (b->cap - b->end >= extra) return true;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->end < extra) cap *= 2;
    unsigned char *p = realloc(b->data, cap);
    if (p == NULL) return false;
    b->data = p;
    b->cap = cap;
    return true;
}

/* An empty buffer that grew for one large frame is given back. */
static void release_if_large(lg_buf *b) {
    if (b->start != b->end || b->cap <= LG_KEEP_BYTES) return;
    free(b->data);
    *b = (lg_buf){0};
}

lg_status lg__conn_new(int timeout_ms, lg_conn **out) {
    lg_conn *c = calloc(1, sizeof *c);
    *out = c;
    if (c == NULL) return LG_OUT_OF_MEMORY;
    c->fd = -1;
    c->next_id = 1;
    c->timeout_ms = normalised_timeout(timeout_ms);
    snprintf(c->closed_reason, sizeof c->closed_reason, "never connected");
    if (!lg__arena_init(&c->arena, 32 << 10)) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory");
    return LG_OK;
}

lg_status lg_connect(const char *path, int timeout_ms, lg_conn **out) {
    lg_status made = lg__conn_new(timeout_ms, out);
    if (made != LG_OK) return made;
    lg_conn *c = *out;
    if (path == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "socket path is NULL");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof addr.sun_path)
        return lg__fail(c, LG_INVALID_ARGUMENT, "socket path is %zu bytes; it must be 1 to %zu", len,
                        sizeof addr.sun_path - 1);
    memcpy(addr.sun_path, path, len + 1);

    /* A blocking connect: on a Unix socket it only waits while the server's accept backlog is full,
     * and SO_SNDTIMEO bounds that wait (EAGAIN when it runs out). A non-blocking connect would
     * answer EAGAIN at once, with no connection in progress to poll for. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return lg__fail(c, LG_IO_ERROR, "socket: %s", strerror(errno));
    int64_t deadline = deadline_after(c->timeout_ms);
    int rc, err = 0;
    do {
        int left = remaining_ms(deadline);
        if (left == 0) { rc = -1, errno = EAGAIN; break; }
        struct timeval tv = {.tv_sec = left > 0 ? left / 1000 : 0, .tv_usec = left > 0 ? (left % 1000) * 1000 : 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno == EISCONN) rc = 0;  /* an interrupted attempt that had completed */
    if (rc < 0) err = errno;
    struct timeval none = {0};
    if (rc == 0 && (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none) < 0 ||
                    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0))
        err = errno;
    if (err != 0) {
        close(fd);
        if (err == EAGAIN || err == EINPROGRESS)
            return lg__fail(c, LG_TIMEOUT, "connecting to %s: the server did not accept within %d ms", path, c->timeout_ms);
        return lg__fail(c, LG_CONNECT_FAILED, "connecting to %s: %s%s", path, strerror(err),
                        err == ENOENT || err == ECONNREFUSED ? " (is layergated running on that socket?)" : "");
    }
    c->fd = fd;
    return lg__ok(c);
}

void lg_close(lg_conn *c) {
    if (c == NULL) return;
    if (c->fd >= 0) close(c->fd);
    free(c->out.data);
    free(c->in.data);
    free(c->auth_token);
    lg__arena_free(&c->arena);
    free(c);
}

/* Tokens are a few hundred bytes; a bound keeps every request small. */
#define LG_MAX_TOKEN_BYTES 4096

lg_status lg_set_auth_token(lg_conn *c, const char *token) {
    if (c == NULL) return LG_INVALID_ARGUMENT;
    if (token != NULL) {
        size_t len = strnlen(token, LG_MAX_TOKEN_BYTES + 1);
        if (len == 0 || len > LG_MAX_TOKEN_BYTES)
            return lg__fail(c, LG_INVALID_ARGUMENT, "token is %s bytes; it must be 1 to %d", len ? "more than 4096" : "0",
                            LG_MAX_TOKEN_BYTES);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)token[i] <= ' ' || (unsigned char)token[i] >= 0x7F)
                return lg__fail(c, LG_INVALID_ARGUMENT, "token has a byte 0x%02x at %zu; a JWT is printable ASCII",
                                (unsigned char)token[i], i);
    }
    char *copy = token ? strdup(token) : NULL;
    if (token != NULL && copy == NULL) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory");
    free(c->auth_token);
    c->auth_token = copy;
    return lg__ok(c);
}

void lg_set_timeout(lg_conn *c, int timeout_ms) { c->timeout_ms = normalised_timeout(timeout_ms); }
void lg_set_wait_lsn_ms(lg_conn *c, uint32_t wait_ms) { c->wait_lsn_ms = wait_ms; }
lg_status lg_last_status(const lg_conn *c) { return c ? c->last_status : LG_OUT_OF_MEMORY; }
const char *lg_errmsg(const lg_conn *c) { return c ? c->message : "out of memory"; }
int lg_server_code(const lg_conn *c) { return c ? c->server_code : 0; }

lg_status lg__queue(lg_conn *c, Request *req) {
    if (c->auth_token != NULL) req->auth_token = c->auth_token;  /* packing only reads it */
    size_t size = layergate__v1__request__get_packed_size(req);
    if (size > UINT32_MAX) return lg__fail(c, LG_FRAME_TOO_LARGE, "request of %zu bytes cannot be framed", size);
    if (!buf_reserve(&c->out, 4 + size)) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory for a %zu-byte request", size);
    unsigned char *p = c->out.data + c->out.end;
    p[0] = (unsigned char)(size >> 24), p[1] = (unsigned char)(size >> 16);
    p[2] = (unsigned char)(size >> 8), p[3] = (unsigned char)size;
    layergate__v1__request__pack(req, p + 4);
    c->out.end += 4 + size;
    return LG_OK;
}

/* Writes what the socket takes now. */
static lg_status write_some(lg_conn *c) {
    while (c->out.start < c->out.end) {
        ssize_t n = send(c->fd, c->out.data + c->out.start, c->out.end - c->out.start, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) { c->out.start += (size_t)n; continue; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return LG_OK;
        if (errno == EPIPE || errno == ECONNRESET) {
            /* The server has closed its end, perhaps after saying why (FRAME_TOO_LARGE): stop writing
             * and read what it sent; the end of the stream then ends the call. */
            c->out.start = c->out.end = 0;
            c->write_closed = true;
            return LG_OK;
        }
        int err = errno;
        close_fd(c, "a write failed");
        return lg__fail(c, LG_IO_ERROR, "send: %s", strerror(err));
    }
    c->out.start = c->out.end = 0;  /* a fresh buffer starts at a frame boundary (see the timeout rule) */
    release_if_large(&c->out);
    return LG_OK;
}

/* One read of what the socket has now; *eof is set when the server has closed its end. */
static lg_status read_some(lg_conn *c, bool *eof) {
    if (!buf_reserve(&c->in, LG_READ_CHUNK)) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory reading an answer");
    for (;;) {
        ssize_t n = recv(c->fd, c->in.data + c->in.end, c->in.cap - c->in.end, MSG_DONTWAIT);
        if (n > 0) { c->in.end += (size_t)n; return LG_OK; }
        if (n == 0) { *eof = true; return LG_OK; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return LG_OK;
        if (errno == ECONNRESET) { *eof = true; return LG_OK; }
        int err = errno;
        close_fd(c, "a read failed");
        return lg__fail(c, LG_IO_ERROR, "recv: %s", strerror(err));
    }
}

/* Hands every whole frame in c->in to the exchange, until it is complete. */
static lg_status take_answers(lg_conn *c, lg_exchange *x) {
    while (x->answered < x->count && c->in.end - c->in.start >= 4) {
        const unsigned char *p = c->in.data + c->in.start;
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        size_t limit = x->max_answer > c->late_answer_limit ? x->max_answer : c->late_answer_limit;
        if (len > limit) {
            close_fd(c, "the server sent an oversized frame");
            return lg__fail(c, LG_PROTOCOL_ERROR, "the server sent a frame of %zu bytes where at most %zu can answer this call",
                            len, limit);
        }
        if (c->in.end - c->in.start < 4 + len) {
            if (!buf_reserve(&c->in, 4 + len - (c->in.end - c->in.start)))
                return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory for a %zu-byte answer", len);
            return LG_OK;
        }
        lg__arena_reset(&c->arena);
        /* What an honest answer unpacks to is within a small multiple of its size (strings and
         * bytes copied once, a struct per message); many empty sub-messages are not honest. */
        c->arena.limit = 4 * len + (64 << 10);
        Response *r = layergate__v1__response__unpack(&c->arena.allocator, len, p + 4);
        c->in.start += 4 + len;
        if (c->in.start == c->in.end) {
            c->in.start = c->in.end = 0;
            release_if_large(&c->in);
        }
        if (r == NULL) {
            bool oom = c->arena.failed && !c->arena.over_limit;
            close_fd(c, "the server sent an answer that does not decode");
            if (c->arena.over_limit)
                return lg__fail(c, LG_PROTOCOL_ERROR, "the server sent a %zu-byte answer that would take more than %zu bytes to unpack",
                                len, c->arena.limit);
            if (oom) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory decoding a %zu-byte answer", len);
            return lg__fail(c, LG_PROTOCOL_ERROR, "the server sent %zu bytes that are not a Response", len);
        }
        if (r->request_id == 0 && r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR) {
            /* The server could not read our stream (e.g. FRAME_TOO_LARGE) and is closing it:
             * that error is the answer to everything still waiting. */
            for (size_t i = 0; i < x->count; i++)
                if (x->on_answer(c, x->ctx, i, r)) x->answered++;
            char why[200];
            snprintf(why, sizeof why, "the server rejected the connection's data (%s)",
                     lg_status_name(lg__status_for_code((int)r->error->code)));
            close_fd(c, why);
            return LG_OK;
        }
        if (r->request_id < x->first_id || r->request_id - x->first_id >= x->count) continue;  /* a late answer */
        if (x->on_answer(c, x->ctx, (size_t)(r->request_id - x->first_id), r)) x->answered++;
    }
    return LG_OK;
}

lg_status lg__exchange(lg_conn *c, lg_exchange *x) {
    int64_t deadline = deadline_after(c->timeout_ms);
    for (;;) {
        while (x->queue != NULL && x->queued < x->count && c->out.end - c->out.start < x->queue_ahead) {
            lg_status s = x->queue(c, x->ctx, x->queued);
            if (s != LG_OK) return s;
            x->queued++;
        }
        lg_status s = take_answers(c, x);
        if (s != LG_OK || x->answered == x->count) return s;
        if (c->fd < 0) return lg__fail(c, LG_CONNECTION_CLOSED, "connection is closed: %s", c->closed_reason);
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (c->out.start < c->out.end && !c->write_closed) p.events |= POLLOUT;
        int wait = remaining_ms(deadline);
        int n = wait == 0 ? 0 : poll(&p, 1, wait);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return lg__fail(c, LG_IO_ERROR, "poll: %s", strerror(errno));
        if (n == 0) {
            /* Answers to this call may still come, before later calls' answers. */
            if (x->max_answer > c->late_answer_limit) c->late_answer_limit = x->max_answer;
            if (c->out.start > 0 && c->out.start < c->out.end)
                close_fd(c, "an earlier call timed out with a request partly written");
            else
                c->out.start = c->out.end = 0;  /* unsent whole requests are dropped; answers that come late are too */
            return lg__fail(c, LG_TIMEOUT, "no answer within %d ms (%zu of %zu answered)", c->timeout_ms, x->answered,
                            x->count);
        }
        if (p.revents & POLLOUT) {
            s = write_some(c);
            if (s != LG_OK) return s;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            bool eof = false;
            s = read_some(c, &eof);
            if (s != LG_OK) return s;
            if (eof) {
                s = take_answers(c, x);  /* answers that arrived before the close still count */
                if (s != LG_OK || x->answered == x->count) return s;
                close_fd(c, "the server closed the connection");
                return lg__fail(c, LG_CONNECTION_CLOSED, "the server closed the connection (%zu of %zu answered)",
                                x->answered, x->count);
            }
        }
    }
}

struct single {
    const Response *answer;
};

static bool single_answer(lg_conn *c, void *ctx, size_t index, const Response *r) {
    (void)c, (void)index;
    struct single *s = ctx;
    if (s->answer != NULL) return false;
    s->answer = r;
    return true;
}

lg_status lg__call(lg_conn *c, Request *req, Layergate__V1__Response__BodyCase expected, const Response **answer) {
    req->request_id = c->next_id++;
    lg_status s = lg__queue(c, req);
    if (s != LG_OK) return s;
    struct single one = {0};
    bool lists = expected == LAYERGATE__V1__RESPONSE__BODY_TENANT_STATUS || expected == LAYERGATE__V1__RESPONSE__BODY_SERVER_STATUS;
    lg_exchange x = {.max_answer = lists ? LG_LARGE_ANSWER_BYTES : LG_SMALL_ANSWER_BYTES,
                     .first_id = req->request_id, .count = 1, .on_answer = single_answer, .ctx = &one};
    s = lg__exchange(c, &x);
    if (s != LG_OK) return s;
    const Response *r = one.answer;
    if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR) return lg__server_error(c, r->error, "");
    if (r->body_case != expected)
        return lg__fail(c, LG_PROTOCOL_ERROR, "the server answered with body %d where %d was expected", (int)r->body_case,
                        (int)expected);
    *answer = r;
    return lg__ok(c);
}
