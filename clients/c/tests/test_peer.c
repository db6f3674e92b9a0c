/*
 * Answers from a peer that is not a well-behaved layergated: the client trusts
 * nothing it reads. A scripted peer on a temp socket reads the client's request
 * frames and sends bytes written out by hand from the protobuf rules (so these
 * are also independent of the library's own decoding). Run under valgrind.
 */
#define _GNU_SOURCE
#include "check.h"
#include "peer.h"
#include "layergate.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *T = "0123456789abcdef0123456789abcdef";

/* Response{request_id = id, get_page = {page = `len` bytes of `fill`, lsn = 5}} */
static void page_answer(peer *p, unsigned id, size_t len, unsigned char fill) {
    unsigned char b[9000];
    size_t inner = 3 + len + 2, n = 0;  /* 0a <len varint (2 bytes)> page, 10 05 */
    b[n++] = 0x08, b[n++] = (unsigned char)id;
    b[n++] = 0x52;  /* field 10, length-delimited */
    b[n++] = (unsigned char)(inner | 0x80), b[n++] = (unsigned char)(inner >> 7);
    b[n++] = 0x0a, b[n++] = (unsigned char)(len | 0x80), b[n++] = (unsigned char)(len >> 7);
    memset(b + n, fill, len), n += len;
    b[n++] = 0x10, b[n++] = 0x05;
    frame(p, b, n);
}

static unsigned char page[LG_PAGE_SIZE];
static const lg_page_key K = {.rel_number = 1};

static void garbage_frame(void) {
    peer p = {.frames = 1, .hold_open = true};
    frame(&p, (const unsigned char[]){0xFF, 0xFF, 0xFF}, 3);
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    lg_status s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_PROTOCOL_ERROR && strstr(lg_errmsg(c), "not a Response"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_CONNECTION_CLOSED, "a stream that failed to decode is not read again: %s", lg_status_name(s));
    lg_close(c);
    peer_stop(&p);
}

static void oversized_frame(void) {
    peer p = {.frames = 1, .hold_open = true};
    memcpy(p.reply, (const unsigned char[]){0x7F, 0xFF, 0xFF, 0xFF}, 4);
    p.reply_len = 4;
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    lg_status s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_PROTOCOL_ERROR && strstr(lg_errmsg(c), "2147483647"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&p);
}

/* The peer answers all four after the first request: later calls find theirs already read. */
static void wrong_answers(void) {
    peer p = {.frames = 1, .hold_open = true};
    frame(&p, (const unsigned char[]){0x08, 0x01, 0x72, 0x00}, 4);                  /* id 1: a CreateTenantResponse */
    page_answer(&p, 2, 100, 0xAB);                                                   /* id 2: a 100-byte page */
    frame(&p, (const unsigned char[]){0x08, 0x03, 0x12, 0x04, 0x08, 0x63, 0x12, 0x00}, 8);  /* id 3: error code 99 */
    page_answer(&p, 4, LG_PAGE_SIZE, 0x5A);                                          /* id 4: fine */
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    memset(page, 0xEE, sizeof page);
    lg_status s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_PROTOCOL_ERROR && page[0] == 0xEE, "wrong body: %s: %s", lg_status_name(s), lg_errmsg(c));
    s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_PROTOCOL_ERROR && strstr(lg_errmsg(c), "100 bytes") && page[0] == 0xEE, "short page: %s: %s",
          lg_status_name(s), lg_errmsg(c));
    s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_UNKNOWN_SERVER_ERROR && lg_server_code(c) == 99 && strstr(lg_errmsg(c), "ERROR_CODE_99"),
          "unknown code: %s: %s (%d)", lg_status_name(s), lg_errmsg(c), lg_server_code(c));
    uint64_t lsn = 0;
    s = lg_get_page(c, T, K, 1, page, sizeof page, &lsn);
    CHECK(s == LG_OK && page[0] == 0x5A && page[LG_PAGE_SIZE - 1] == 0x5A && lsn == 5, "then a good page: %s: %s",
          lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&p);
}

/* Answers in any order, one for an id never asked, one twice: each read gets its own page. */
static void batch_out_of_order(void) {
    peer p = {.frames = 3, .hold_open = true};
    page_answer(&p, 77, LG_PAGE_SIZE, 0x77);
    page_answer(&p, 3, LG_PAGE_SIZE, 0x33);
    page_answer(&p, 1, LG_PAGE_SIZE, 0x11);
    page_answer(&p, 3, LG_PAGE_SIZE, 0x99);  /* a second answer for id 3 changes nothing */
    page_answer(&p, 2, LG_PAGE_SIZE, 0x22);
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    static unsigned char pages[3][LG_PAGE_SIZE];
    lg_page_read reads[3];
    for (int i = 0; i < 3; i++) reads[i] = (lg_page_read){.key = K, .lsn = 1, .page = pages[i]};
    lg_status s = lg_get_pages(c, T, reads, 3);
    CHECK(s == LG_OK && pages[0][0] == 0x11 && pages[1][0] == 0x22 && pages[2][8191] == 0x33, "%s: %s, %02x %02x %02x",
          lg_status_name(s), lg_errmsg(c), pages[0][0], pages[1][0], pages[2][8191]);
    lg_close(c);
    peer_stop(&p);
}

/* request id 0 carries an error for the whole stream (FRAME_TOO_LARGE): every waiting read gets it; then closed. */
static void connection_level_error(void) {
    peer p = {.frames = 2, .close_after = true};
    frame(&p, (const unsigned char[]){0x12, 0x05, 0x08, 0x08, 0x12, 0x01, 0x78}, 7);
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    static unsigned char pages[2][LG_PAGE_SIZE];
    lg_page_read reads[2] = {{.key = K, .lsn = 1, .page = pages[0]}, {.key = K, .lsn = 1, .page = pages[1]}};
    lg_status s = lg_get_pages(c, T, reads, 2);
    CHECK(s == LG_FRAME_TOO_LARGE && reads[0].status == LG_FRAME_TOO_LARGE && reads[1].status == LG_FRAME_TOO_LARGE &&
          strstr(lg_errmsg(c), "FRAME_TOO_LARGE: x"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_CONNECTION_CLOSED && strstr(lg_errmsg(c), "rejected"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&p);
}

/* Half a frame, then the peer closes: CONNECTION_CLOSED, not a hang or a read past the end. */
static void torn_frame_then_close(void) {
    peer p = {.frames = 1, .close_after = true};
    page_answer(&p, 1, LG_PAGE_SIZE, 0x44);
    p.reply_len -= 5000;
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    lg_status s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_CONNECTION_CLOSED && strstr(lg_errmsg(c), "0 of 1"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&p);
}

/* A listener whose accept backlog is full: lg_connect waits for its timeout, then says so. */
static void connect_timeout(void) {
    test_listener l;
    if (!listener_open(&l, 0)) { CHECK(0, "listener"); listener_close(&l); return; }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, l.path, strlen(l.path) + 1);
    int fillers[4], n = 0;
    for (; n < 4; n++) {  /* fill the backlog: connects that nobody accepts */
        fillers[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(fillers[n], (struct sockaddr *)&a, sizeof a) < 0) { close(fillers[n]); break; }
    }
    CHECK(n >= 1 && n < 4, "backlog filled after %d connects", n);
    double t0 = now_s();
    lg_conn *c;
    lg_status s = lg_connect(l.path, 300, &c);
    double took = now_s() - t0;
    CHECK(s == LG_TIMEOUT && took >= 0.25 && took < 5 && strstr(lg_errmsg(c), "300 ms"), "%s after %.3f s: %s",
          lg_status_name(s), took, lg_errmsg(c));
    lg_close(c);
    for (int i = 0; i < n; i++) close(fillers[i]);
    listener_close(&l);
}

/* Response{request_id = 1, tenant_status = {layers = n empty LayerInfo}}: 2 bytes on the wire per
 * layer, a struct and a pointer each once unpacked. */
static void empty_layers_answer(peer *p, size_t n) {
    size_t inner = 2 * n;
    unsigned char *b = big_frame(p, 2 + 1 + 4 + inner), *o = b;
    *o++ = 0x08, *o++ = 0x01, *o++ = 0x7a;  /* field 15, length-delimited */
    for (int i = 0; i < 4; i++) *o++ = (unsigned char)((inner >> (7 * i)) & 0x7F) | (i < 3 ? 0x80 : 0);
    for (size_t i = 0; i < n; i++) *o++ = 0x32, *o++ = 0x00;
}

static void hostile_sizes(void) {
    /* A GetPage answer is about 8 KiB: a 1 MiB frame is refused from its header. */
    peer p = {.frames = 1, .hold_open = true};
    unsigned char *b = big_frame(&p, 1 << 20);
    memset(b, 0, 1 << 20);
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    lg_status s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_PROTOCOL_ERROR && strstr(lg_errmsg(c), "at most 65536"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&p);

    /* 16 MiB of empty layers would unpack to about 600 MiB: refused at the arena's bound. */
    peer q = {.frames = 1, .hold_open = true};
    empty_layers_answer(&q, (16 << 20) / 2 - 8);
    peer_start(&q);
    c = connect_to(&q, 60000);
    lg_tenant_info info;
    s = lg_tenant_status(c, T, &info);
    CHECK(s == LG_PROTOCOL_ERROR && strstr(lg_errmsg(c), "to unpack"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&q);

    /* And a status answer over 64 MiB is refused from its header. */
    peer r = {.frames = 1, .hold_open = true};
    memcpy(r.reply, (const unsigned char[]){0x04, 0x00, 0x00, 0x01}, 4);
    r.reply_len = 4;
    peer_start(&r);
    c = connect_to(&r, 5000);
    s = lg_tenant_status(c, T, &info);
    CHECK(s == LG_PROTOCOL_ERROR && strstr(lg_errmsg(c), "67108865"), "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&r);
}

static void auth_token(void) {
    peer p = {.frames = 1, .hold_open = true};
    page_answer(&p, 1, LG_PAGE_SIZE, 0x5A);
    peer_start(&p);
    lg_conn *c = connect_to(&p, 5000);
    CHECK(lg_set_auth_token(c, "") == LG_INVALID_ARGUMENT, "an empty token");
    CHECK(lg_set_auth_token(c, "a b") == LG_INVALID_ARGUMENT && strstr(lg_errmsg(c), "0x20"), "%s", lg_errmsg(c));
    static char long_token[5000];
    memset(long_token, 'a', sizeof long_token - 1);
    CHECK(lg_set_auth_token(c, long_token) == LG_INVALID_ARGUMENT, "a 4999-byte token");
    CHECK(lg_set_auth_token(c, "hdr.claims.sig") == LG_OK, "%s", lg_errmsg(c));
    lg_status s = lg_get_page(c, T, K, 1, page, sizeof page, NULL);
    CHECK(s == LG_OK, "%s: %s", lg_status_name(s), lg_errmsg(c));
    lg_close(c);
    peer_stop(&p);
    /* Request field 2 (auth_token), 14 bytes, after request_id (field 1). */
    const unsigned char want[] = {0x12, 14, 'h', 'd', 'r', '.', 'c', 'l', 'a', 'i', 'm', 's', '.', 's', 'i', 'g'};
    CHECK(p.request_len > 2 + sizeof want && memcmp(p.request + 2, want, sizeof want) == 0, "the request carries the token");
}

int main(void) {
    static const named_test tests[] = {
        {"a frame that is not a Response", garbage_frame},
        {"an oversized frame length", oversized_frame},
        {"wrong body, short page, unknown error code, then a good page", wrong_answers},
        {"a batch answered out of order, with a stray and a repeated id", batch_out_of_order},
        {"an error for the whole connection (request id 0)", connection_level_error},
        {"a torn frame, then the peer closes", torn_frame_then_close},
        {"connect to a full accept backlog times out", connect_timeout},
        {"answers bigger than their call, or that unpack to far more than their size", hostile_sizes},
        {"a token set on the connection goes with every request", auth_token},
    };
    return run_tests("test_peer", tests, sizeof tests / sizeof tests[0]);
}
