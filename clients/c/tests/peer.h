/* A scripted peer on a temp socket, playing a server that may not be a well-behaved layergated. */
#ifndef LG_TEST_PEER_H
#define LG_TEST_PEER_H

#include "check.h"
#include "layergate.h"
#include "listener.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* What the peer does on its one connection: read `frames` request frames, send `reply`, then maybe close. */
typedef struct peer {
    test_listener listener;
    int frames;
    unsigned char reply[1 << 16];
    size_t reply_len;
    bool close_after;
    bool hold_open;     /* keep the connection until the client closes it */
    unsigned char *big; /* sent after reply (the peer frees it) */
    size_t big_len;
    unsigned char request[4096];  /* the first request frame's body, as far as it fits */
    size_t request_len;
    pthread_t thread;
} peer;

static inline bool read_full(int fd, unsigned char *buf, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, buf, n);
        if (r <= 0) return false;
        buf += r, n -= (size_t)r;
    }
    return true;
}

static void *peer_main(void *arg) {
    peer *p = arg;
    int fd = accept(p->listener.fd, NULL, NULL);
    if (fd < 0) return NULL;
    for (int i = 0; i < p->frames; i++) {
        unsigned char len[4], body[1 << 16];
        if (!read_full(fd, len, 4)) break;
        size_t n = (size_t)len[0] << 24 | (size_t)len[1] << 16 | (size_t)len[2] << 8 | len[3];
        if (n > sizeof body || !read_full(fd, body, n)) break;
        if (i == 0) memcpy(p->request, body, p->request_len = n < sizeof p->request ? n : sizeof p->request);
    }
    if (p->reply_len > 0 && write(fd, p->reply, p->reply_len) != (ssize_t)p->reply_len) perror("peer write");
    for (size_t off = 0; off < p->big_len;) {  /* the client may stop reading: then the write fails */
        ssize_t w = send(fd, p->big + off, p->big_len - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += (size_t)w;
    }
    if (p->hold_open) {
        unsigned char sink[4096];
        while (read(fd, sink, sizeof sink) > 0) {}
    }
    close(fd);
    return NULL;
}

static inline void peer_start(peer *p) {
    if (!listener_open(&p->listener, 4)) exit(1);
    pthread_create(&p->thread, NULL, peer_main, p);
}

static inline void peer_stop(peer *p) {
    pthread_join(p->thread, NULL);
    free(p->big);
    listener_close(&p->listener);
}

/* Appends a frame: 4-byte big-endian length, then the body. */
static inline void frame(peer *p, const unsigned char *body, size_t n) {
    if (p->reply_len + 4 + n > sizeof p->reply) { printf("test bug: the peer's script is too long\n"); exit(1); }
    unsigned char *o = p->reply + p->reply_len;
    o[0] = (unsigned char)(n >> 24), o[1] = (unsigned char)(n >> 16), o[2] = (unsigned char)(n >> 8), o[3] = (unsigned char)n;
    memcpy(o + 4, body, n);
    p->reply_len += 4 + n;
}

/* Appends a frame header of `n` bytes to the big reply, reserving room for `n` body bytes; returns the body. */
static inline unsigned char *big_frame(peer *p, size_t n) {
    unsigned char *grown = realloc(p->big, p->big_len + 4 + n);
    if (grown == NULL) { printf("test: out of memory\n"); exit(1); }
    p->big = grown;
    unsigned char *o = p->big + p->big_len;
    o[0] = (unsigned char)(n >> 24), o[1] = (unsigned char)(n >> 16), o[2] = (unsigned char)(n >> 8), o[3] = (unsigned char)n;
    p->big_len += 4 + n;
    return o + 4;
}

static inline lg_conn *connect_to(peer *p, int timeout_ms) {
    lg_conn *c;
    lg_status s = lg_connect(p->listener.path, timeout_ms, &c);
    CHECK(s == LG_OK, "connect: %s", lg_errmsg(c));
    return c;
}

#endif
