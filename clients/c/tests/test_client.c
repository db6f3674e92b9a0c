/*
 * liblayergate against a real layergated (path in $LAYERGATED): every call,
 * the error paths, and a pipelined batch of 1,000 reads. make test runs it
 * under valgrind, so a leak or an invalid read fails it too.
 */
#define _GNU_SOURCE
#include "layergate.h"
#include "check.h"
#include "listener.h"
#include "server.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A call's status must be `want`; prints the connection's message otherwise. */
#define EXPECT(conn, call, want)                                                                        \
    do {                                                                                                \
        lg_status got_ = (call);                                                                        \
        CHECK(got_ == (want), "%s returned %s (%s), want %s", #call, lg_status_name(got_), lg_errmsg(conn), \
              lg_status_name(want));                                                                    \
    } while (0)

static const char *T = "c0ffee00000000000000000000000001";
static const char *UNKNOWN = "c0ffee000000000000000000000000ff";
static const char *server_socket;  /* the shared server's, for tests that open their own connection */
static test_server shared_server;
static lg_conn *shared;            /* the connection most tests share, in order */

static lg_page_key key(uint32_t block) { return (lg_page_key){.spc_oid = 1663, .db_oid = 5, .rel_number = 3000, .block = block}; }

static void fill_page(unsigned char *p, uint32_t seed) {
    for (int i = 0; i < LG_PAGE_SIZE; i++) p[i] = (unsigned char)(seed * 131 + (uint32_t)i * 7 + (uint32_t)i / 256);
}

static lg_conn *connect_or_die(const test_server *s) {
    lg_conn *c;
    lg_status st = lg_connect(s->socket, 10000, &c);
    if (st != LG_OK) {
        printf("  cannot connect to %s: %s\n", s->socket, lg_errmsg(c));
        exit(1);
    }
    return c;
}

static void test_status_names(void) {
    const char *proto[] = {"OK", "INVALID_ARGUMENT", "TENANT_NOT_FOUND", "PAGE_NOT_FOUND", "LSN_NOT_AVAILABLE",
                           "TENANT_UNAVAILABLE", "LAYER_EXISTS", "PERMISSION_DENIED", "FRAME_TOO_LARGE", "INTERNAL",
                           "TENANT_EXISTS", "LSN_BELOW_GC_HORIZON", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"};
    for (int i = 0; i <= 13; i++) CHECK(strcmp(lg_status_name((lg_status)i), proto[i]) == 0, "code %d is %s", i, lg_status_name((lg_status)i));
    lg_status client[] = {LG_UNKNOWN_SERVER_ERROR, LG_TIMEOUT, LG_CONNECT_FAILED, LG_CONNECTION_CLOSED, LG_IO_ERROR,
                          LG_PROTOCOL_ERROR, LG_OUT_OF_MEMORY};
    for (size_t i = 0; i < sizeof client / sizeof client[0]; i++)
        CHECK(strcmp(lg_status_name(client[i]), "UNKNOWN_STATUS") != 0, "status %d has no name", client[i]);
    CHECK(strcmp(lg_status_name((lg_status)12345), "UNKNOWN_STATUS") == 0, "an unknown status");
}

static void test_connect_errors(void) {
    lg_conn *c;
    EXPECT(c, lg_connect("/tmp/lgc-no-such-dir/none.sock", 1000, &c), LG_CONNECT_FAILED);
    CHECK(strstr(lg_errmsg(c), "/tmp/lgc-no-such-dir/none.sock") != NULL, "message names the path: %s", lg_errmsg(c));
    /* A failed connection answers every call with CONNECTION_CLOSED, not a crash. */
    EXPECT(c, lg_create_tenant(c, T), LG_CONNECTION_CLOSED);
    lg_close(c);
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    EXPECT(c, lg_connect(longpath, 1000, &c), LG_INVALID_ARGUMENT);
    lg_close(c);
    EXPECT(c, lg_connect(NULL, 1000, &c), LG_INVALID_ARGUMENT);
    lg_close(c);
    lg_close(NULL);
    CHECK(strcmp(lg_errmsg(NULL), "out of memory") == 0, "lg_errmsg(NULL)");
}

static void test_create_tenant(void) {
    lg_conn *c = shared;
    EXPECT(c, lg_create_tenant(c, T), LG_OK);
    CHECK(strcmp(lg_errmsg(c), "") == 0 && lg_last_status(c) == LG_OK, "no message after success");
    EXPECT(c, lg_create_tenant(c, T), LG_TENANT_EXISTS);
    CHECK(lg_server_code(c) == 10, "server code %d", lg_server_code(c));
    CHECK(strncmp(lg_errmsg(c), "TENANT_EXISTS: ", 15) == 0 && strlen(lg_errmsg(c)) > 15, "message: %s", lg_errmsg(c));
    EXPECT(c, lg_create_tenant(c, "not-a-tenant-id"), LG_INVALID_ARGUMENT);
    CHECK(lg_server_code(c) == 1, "the server said so: %d", lg_server_code(c));
    EXPECT(c, lg_create_tenant(c, NULL), LG_INVALID_ARGUMENT);
    CHECK(lg_server_code(c) == 0, "NULL is refused without a round trip");
}

/* Records: an image of block 1 at LSN 10, a patch on it at 11, a will_init delta of block 2 at 12. */
static void test_put_and_get(void) {
    lg_conn *c = shared;
    unsigned char image[LG_PAGE_SIZE], page[LG_PAGE_SIZE], want[LG_PAGE_SIZE];
    fill_page(image, 1);
    const char hello[] = "hello", tail[] = "Z";
    lg_patch p11[] = {{.offset = 100, .data = hello, .len = 5}, {.offset = LG_PAGE_SIZE - 1, .data = tail, .len = 1}};
    lg_patch p12[] = {{.offset = 8, .data = hello, .len = 5}};
    lg_record recs[] = {
        {.key = key(1), .lsn = 10, .image = image, .image_len = LG_PAGE_SIZE},
        {.key = key(1), .lsn = 11, .patches = p11, .patch_count = 2},
        {.key = key(2), .lsn = 12, .will_init = true, .patches = p12, .patch_count = 1},
    };
    uint64_t last = 0, read_lsn = 0;
    EXPECT(c, lg_put_records(c, T, recs, 3, &last), LG_OK);
    CHECK(last == 12, "last_record_lsn %llu", (unsigned long long)last);

    EXPECT(c, lg_get_page(c, T, key(1), 10, page, sizeof page, &read_lsn), LG_OK);
    CHECK(memcmp(page, image, LG_PAGE_SIZE) == 0 && read_lsn == 10, "block 1 at 10 is the image");
    memcpy(want, image, LG_PAGE_SIZE);
    memcpy(want + 100, hello, 5);
    want[LG_PAGE_SIZE - 1] = 'Z';
    EXPECT(c, lg_get_page(c, T, key(1), 11, page, sizeof page, &read_lsn), LG_OK);
    CHECK(memcmp(page, want, LG_PAGE_SIZE) == 0 && read_lsn == 11, "block 1 at 11 has the patches");
    EXPECT(c, lg_get_page(c, T, key(1), LG_LSN_LATEST, page, sizeof page, &read_lsn), LG_OK);
    CHECK(memcmp(page, want, LG_PAGE_SIZE) == 0 && read_lsn == 12, "latest reads at last_record_lsn: %llu",
          (unsigned long long)read_lsn);
    memset(want, 0, sizeof want);
    memcpy(want + 8, hello, 5);
    EXPECT(c, lg_get_page(c, T, key(2), 12, page, sizeof page, NULL), LG_OK);
    CHECK(memcmp(page, want, LG_PAGE_SIZE) == 0, "block 2 starts from a zero page");

    /* The error paths of a read; the caller's buffer is untouched by each. */
    memset(page, 0xEE, sizeof page);
    EXPECT(c, lg_get_page(c, UNKNOWN, key(1), 10, page, sizeof page, NULL), LG_TENANT_NOT_FOUND);
    CHECK(strstr(lg_errmsg(c), "TENANT_NOT_FOUND") != NULL, "message: %s", lg_errmsg(c));
    EXPECT(c, lg_get_page(c, "xyz", key(1), 10, page, sizeof page, NULL), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_get_page(c, T, key(99), 12, page, sizeof page, NULL), LG_PAGE_NOT_FOUND);
    EXPECT(c, lg_get_page(c, T, key(1), 9, page, sizeof page, NULL), LG_PAGE_NOT_FOUND);
    lg_set_wait_lsn_ms(c, 50);
    EXPECT(c, lg_get_page(c, T, key(1), 1000, page, sizeof page, NULL), LG_LSN_NOT_AVAILABLE);
    lg_set_wait_lsn_ms(c, 0);
    EXPECT(c, lg_get_page(c, T, key(1), 10, page, LG_PAGE_SIZE - 1, NULL), LG_INVALID_ARGUMENT);
    CHECK(strstr(lg_errmsg(c), "8191") != NULL, "message: %s", lg_errmsg(c));
    EXPECT(c, lg_get_page(c, T, key(1), 10, NULL, LG_PAGE_SIZE, NULL), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_get_page(c, NULL, key(1), 10, page, sizeof page, NULL), LG_INVALID_ARGUMENT);
    bool untouched = true;
    for (int i = 0; i < LG_PAGE_SIZE; i++) untouched &= page[i] == 0xEE;
    CHECK(untouched, "a failed read writes nothing into the buffer");
}

/* Each bad PutRecords is rejected whole; the connection and the data stay as they were. */
static void test_put_errors(void) {
    lg_conn *c = shared;
    unsigned char image[LG_PAGE_SIZE], page[LG_PAGE_SIZE];
    fill_page(image, 2);
    const char x[] = "x";
    lg_record short_image = {.key = key(3), .lsn = 20, .image = image, .image_len = 100};
    EXPECT(c, lg_put_records(c, T, &short_image, 1, NULL), LG_INVALID_ARGUMENT);
    CHECK(strstr(lg_errmsg(c), "INVALID_ARGUMENT: ") == lg_errmsg(c), "message: %s", lg_errmsg(c));
    lg_record backwards = {.key = key(3), .lsn = 5, .image = image, .image_len = LG_PAGE_SIZE};
    EXPECT(c, lg_put_records(c, T, &backwards, 1, NULL), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_put_records(c, T, NULL, 0, NULL), LG_INVALID_ARGUMENT);  /* no records */
    lg_patch outside = {.offset = LG_PAGE_SIZE, .data = x, .len = 1};
    lg_record bad_patch = {.key = key(3), .lsn = 20, .patches = &outside, .patch_count = 1};
    EXPECT(c, lg_put_records(c, T, &bad_patch, 1, NULL), LG_INVALID_ARGUMENT);
    lg_record no_patches = {.key = key(3), .lsn = 20};
    EXPECT(c, lg_put_records(c, T, &no_patches, 1, NULL), LG_INVALID_ARGUMENT);
    lg_record big_fork = {.key = {.fork = 256, .block = 3}, .lsn = 20, .image = image, .image_len = LG_PAGE_SIZE};
    EXPECT(c, lg_put_records(c, T, &big_fork, 1, NULL), LG_INVALID_ARGUMENT);
    lg_record null_patches = {.key = key(3), .lsn = 20, .patch_count = 1};
    EXPECT(c, lg_put_records(c, T, &null_patches, 1, NULL), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_put_records(c, UNKNOWN, &backwards, 1, NULL), LG_TENANT_NOT_FOUND);
    /* Half good, half bad: nothing of it is stored. */
    lg_record mixed[] = {{.key = key(3), .lsn = 20, .image = image, .image_len = LG_PAGE_SIZE}, short_image};
    mixed[1].lsn = 21;
    EXPECT(c, lg_put_records(c, T, mixed, 2, NULL), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_get_page(c, T, key(3), LG_LSN_LATEST, page, sizeof page, NULL), LG_PAGE_NOT_FOUND);
    lg_tenant_info info;
    EXPECT(c, lg_tenant_status(c, T, &info), LG_OK);
    CHECK(info.last_record_lsn == 12, "nothing stored: last_record_lsn %llu", (unsigned long long)info.last_record_lsn);
}

/* A PutRecords over the server's 16 MiB frame limit: the server says FRAME_TOO_LARGE and closes; the
 * client, still writing, must report that answer rather than a broken pipe. */
static void test_frame_too_large(void) {
    lg_conn *c;
    EXPECT(c, lg_connect(server_socket, 10000, &c), LG_OK);
    enum { COUNT = 2100 };  /* 2,100 images: about 17.3 MB */
    static unsigned char image[LG_PAGE_SIZE];
    lg_record *recs = calloc(COUNT, sizeof *recs);
    for (int i = 0; recs != NULL && i < COUNT; i++)
        recs[i] = (lg_record){.key = key(50000 + (uint32_t)i), .lsn = 90000 + (uint64_t)i, .image = image, .image_len = LG_PAGE_SIZE};
    EXPECT(c, recs ? lg_put_records(c, T, recs, COUNT, NULL) : LG_OUT_OF_MEMORY, LG_FRAME_TOO_LARGE);
    CHECK(lg_server_code(c) == 8, "the server's code: %d (%s)", lg_server_code(c), lg_errmsg(c));
    unsigned char page[LG_PAGE_SIZE];
    EXPECT(c, lg_get_page(c, T, key(1), 10, page, sizeof page, NULL), LG_CONNECTION_CLOSED);
    free(recs);
    lg_close(c);
}

/* 1,000 pages in, then one pipelined batch of 1,000 reads, checked byte for byte. */
static void test_batch(void) {
    lg_conn *c = shared;
    enum { N = 1000 };
    static unsigned char images[N][LG_PAGE_SIZE], pages[N][LG_PAGE_SIZE];
    uint64_t base = 100;
    for (int start = 0; start < N; start += 100) {
        lg_record recs[100];
        for (int i = 0; i < 100; i++) {
            fill_page(images[start + i], 1000 + (uint32_t)(start + i));
            recs[i] = (lg_record){.key = key(1000 + (uint32_t)(start + i)), .lsn = base + (uint64_t)(start + i),
                                  .image = images[start + i], .image_len = LG_PAGE_SIZE};
        }
        EXPECT(c, lg_put_records(c, T, recs, 100, NULL), LG_OK);
    }
    static lg_page_read reads[N];
    for (int i = 0; i < N; i++) reads[i] = (lg_page_read){.key = key(1000 + (uint32_t)i), .lsn = LG_LSN_LATEST, .page = pages[i]};
    EXPECT(c, lg_get_pages(c, T, reads, N), LG_OK);
    int bad = 0;
    for (int i = 0; i < N; i++)
        if (reads[i].status != LG_OK || reads[i].read_lsn != base + N - 1 || memcmp(pages[i], images[i], LG_PAGE_SIZE) != 0) bad++;
    CHECK(bad == 0, "%d of %d reads wrong", bad, N);

    /* Reads at each page's own LSN, with two that fail: each read has its own status. */
    for (int i = 0; i < N; i++) reads[i] = (lg_page_read){.key = key(1000 + (uint32_t)i), .lsn = base + (uint64_t)i, .page = pages[i]};
    reads[7].key = key(999999);            /* never written */
    reads[500].lsn = base + 499;           /* before block 1500 was written */
    EXPECT(c, lg_get_pages(c, T, reads, N), LG_PAGE_NOT_FOUND);
    CHECK(strstr(lg_errmsg(c), "read 7 of 1000: PAGE_NOT_FOUND") != NULL, "message names the first failure: %s", lg_errmsg(c));
    bad = 0;
    for (int i = 0; i < N; i++) {
        lg_status want = i == 7 || i == 500 ? LG_PAGE_NOT_FOUND : LG_OK;
        if (reads[i].status != want || (want == LG_OK && memcmp(pages[i], images[i], LG_PAGE_SIZE) != 0)) bad++;
    }
    CHECK(bad == 0, "%d reads with the wrong status or bytes", bad);

    /* 20,000 reads are about 1.2 MB of requests and 160 MB of answers: far more than the socket buffers
     * hold in either direction, so the batch only finishes if it reads while it writes. */
    enum { BIG = 20000 };
    lg_page_read *big = calloc(BIG, sizeof *big);
    for (int i = 0; big != NULL && i < BIG; i++)
        big[i] = (lg_page_read){.key = key(1000 + (uint32_t)(i % N)), .lsn = LG_LSN_LATEST, .page = pages[i % N]};
    memset(pages, 0, sizeof pages);
    EXPECT(c, big ? lg_get_pages(c, T, big, BIG) : LG_OUT_OF_MEMORY, LG_OK);
    bad = 0;
    for (int i = 0; big != NULL && i < BIG; i++)
        if (big[i].status != LG_OK || memcmp(pages[i % N], images[i % N], LG_PAGE_SIZE) != 0) bad++;
    CHECK(bad == 0, "%d of %d reads wrong", bad, BIG);
    free(big);

    EXPECT(c, lg_get_pages(c, T, reads, 0), LG_OK);
    reads[3].page = NULL;
    EXPECT(c, lg_get_pages(c, T, reads, 4), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_get_pages(c, UNKNOWN, reads, 3), LG_TENANT_NOT_FOUND);
    CHECK(reads[0].status == LG_TENANT_NOT_FOUND && reads[2].status == LG_TENANT_NOT_FOUND, "each read failed");
}

/* Pipelined puts: in order, each with its own status, and the bytes read back. */
static void test_put_many(void) {
    lg_conn *c = shared;
    enum { N = 200 };
    static unsigned char images[N][LG_PAGE_SIZE], pages[N][LG_PAGE_SIZE];
    static lg_record recs[N];
    static lg_put puts[N];
    static lg_page_read reads[N];
    const uint64_t base = 2000;
    for (int i = 0; i < N; i++) {
        fill_page(images[i], 7000 + (uint32_t)i);
        recs[i] = (lg_record){.key = key(7000 + (uint32_t)i), .lsn = base + (uint64_t)i, .image = images[i], .image_len = LG_PAGE_SIZE};
        puts[i] = (lg_put){.records = &recs[i], .count = 1};
    }
    EXPECT(c, lg_put_many(c, T, puts, N), LG_OK);
    int bad = 0;
    for (int i = 0; i < N; i++)
        if (puts[i].status != LG_OK || puts[i].last_record_lsn < base + (uint64_t)i || puts[i].last_record_lsn > base + N - 1) bad++;
    CHECK(bad == 0, "%d of %d puts refused or answered with another LSN", bad, N);
    for (int i = 0; i < N; i++) reads[i] = (lg_page_read){.key = key(7000 + (uint32_t)i), .lsn = base + (uint64_t)i, .page = pages[i]};
    EXPECT(c, lg_get_pages(c, T, reads, N), LG_OK);
    bad = 0;
    for (int i = 0; i < N; i++)
        if (memcmp(pages[i], images[i], LG_PAGE_SIZE) != 0) bad++;
    CHECK(bad == 0, "%d of %d pages differ from what was put", bad, N);

    /* Put 5 of 10 goes back in LSN order: it alone is refused, and named. */
    for (int i = 0; i < 10; i++) recs[i].lsn = base + N + (uint64_t)i;
    recs[5].lsn = base;
    EXPECT(c, lg_put_many(c, T, puts, 10), LG_INVALID_ARGUMENT);
    CHECK(strstr(lg_errmsg(c), "put 5 of 10") != NULL, "the message names the put: %s", lg_errmsg(c));
    bad = 0;
    for (int i = 0; i < 10; i++)
        if (puts[i].status != (i == 5 ? LG_INVALID_ARGUMENT : LG_OK)) bad++;
    CHECK(bad == 0, "%d puts with the wrong status", bad);

    EXPECT(c, lg_put_many(c, T, puts, 0), LG_OK);
    puts[2] = (lg_put){.records = NULL, .count = 1};
    EXPECT(c, lg_put_many(c, T, puts, 3), LG_INVALID_ARGUMENT);
    CHECK(strstr(lg_errmsg(c), "put 2 of 3: records is NULL") != NULL, "checked before sending: %s", lg_errmsg(c));
    CHECK(puts[0].status == LG_INVALID_ARGUMENT && puts[1].status == LG_INVALID_ARGUMENT,
          "nothing was sent, and every put says so (not a former call's LG_OK)");
    puts[0] = (lg_put){.records = &recs[0], .count = 1};
    EXPECT(c, lg_put_many(c, UNKNOWN, puts, 1), LG_TENANT_NOT_FOUND);
}

/* The example program, run as a reader would run it, against this server. */

static void test_example_program(void) {
    const char *prog = getenv("COMPUTE_NODE");
    if (prog == NULL) { printf("  skipped: COMPUTE_NODE is not set\n"); return; }
    char cmd[1024], line[128];
    snprintf(cmd, sizeof cmd, "%s --socket %s --lsn 1099 %s 1663 5 3000 1000 10 2>&1", prog, server_socket, T);
    FILE *p = popen(cmd, "r");
    int n = 0;
    while (p != NULL && fgets(line, sizeof line, p) != NULL) {
        unsigned char page[LG_PAGE_SIZE];
        fill_page(page, 1000 + (uint32_t)n);
        uint32_t sum = 0;
        for (int k = 0; k < LG_PAGE_SIZE; k++) sum = sum * 31 + page[k];
        char want[64];
        snprintf(want, sizeof want, "block %d: %08x\n", 1000 + n, sum);
        CHECK(strcmp(line, want) == 0, "line %d: %s", n, line);
        n++;
    }
    int status = p ? pclose(p) : -1;
    CHECK(n == 10 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "%d lines, status %#x", n, status);
    snprintf(cmd, sizeof cmd, "%s --socket %s %s 1663 5 3000 1000 1 2>&1", prog, server_socket, UNKNOWN);
    p = popen(cmd, "r");
    bool said = false;
    while (p != NULL && fgets(line, sizeof line, p) != NULL) said |= strstr(line, "TENANT_NOT_FOUND") != NULL;
    status = p ? pclose(p) : -1;
    CHECK(said && WIFEXITED(status) && WEXITSTATUS(status) == 1, "an unknown tenant: status %#x", status);
}

/* The header's thread rule: a connection per thread, used at the same time, with no global state between them. */
struct reader { int index; int bad; lg_status failed; };

static void *read_in_thread(void *arg) {
    struct reader *r = arg;
    lg_conn *c;
    if ((r->failed = lg_connect(server_socket, 10000, &c)) != LG_OK) { lg_close(c); return NULL; }
    static _Thread_local unsigned char pages[16][LG_PAGE_SIZE];
    unsigned char want[LG_PAGE_SIZE];
    for (int round = 0; round < 30 && r->failed == LG_OK; round++) {
        lg_page_read reads[16];
        for (int i = 0; i < 16; i++)
            reads[i] = (lg_page_read){.key = key(1000 + (uint32_t)((r->index * 97 + round * 16 + i) % 1000)), .lsn = LG_LSN_LATEST, .page = pages[i]};
        r->failed = lg_get_pages(c, T, reads, 16);
        for (int i = 0; i < 16 && r->failed == LG_OK; i++) {
            fill_page(want, reads[i].key.block);
            r->bad += memcmp(pages[i], want, LG_PAGE_SIZE) != 0;
        }
    }
    lg_close(c);
    return NULL;
}

static void test_threads(void) {
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    struct reader r[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct reader){.index = i};
        pthread_create(&t[i], NULL, read_in_thread, &r[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK(r[i].failed == LG_OK && r[i].bad == 0, "thread %d: %s, %d wrong pages", i, lg_status_name(r[i].failed), r[i].bad);
    }
}

static void test_compact_status_reset(void) {
    lg_conn *c = shared;
    lg_tenant_info before, after;
    EXPECT(c, lg_tenant_status(c, T, &before), LG_OK);
    CHECK(strcmp(before.tenant_id, T) == 0 && strcmp(before.state, "active") == 0, "%s %s", before.tenant_id, before.state);
    CHECK(before.last_record_lsn == 1099, "last_record_lsn %llu", (unsigned long long)before.last_record_lsn);
    lg_compact_result cr;
    lg_set_timeout(c, 60000);
    EXPECT(c, lg_compact(c, T, true, &cr), LG_OK);
    CHECK(cr.layers_created > 0 && cr.bytes_written > 0, "created %u, %llu bytes", cr.layers_created, (unsigned long long)cr.bytes_written);
    EXPECT(c, lg_tenant_status(c, T, &after), LG_OK);
    CHECK(after.disk_consistent_lsn == 1099, "everything is on disk: %llu", (unsigned long long)after.disk_consistent_lsn);
    CHECK(after.layer_count > 0 && after.image_layer_count > 0 && after.layer_bytes > 0, "%u layers (%u images), %llu bytes",
          after.layer_count, after.image_layer_count, (unsigned long long)after.layer_bytes);
    CHECK(after.compaction_failures == 0 && after.last_compaction_error[0] == '\0', "no failures");
    EXPECT(c, lg_compact(c, UNKNOWN, false, NULL), LG_TENANT_NOT_FOUND);

    lg_reset_result rr;
    EXPECT(c, lg_reset_tenant(c, T, true, &rr), LG_OK);
    CHECK(rr.generation > after.generation && rr.files_swept == 0, "generation %llu -> %llu, %u swept",
          (unsigned long long)after.generation, (unsigned long long)rr.generation, rr.files_swept);
    EXPECT(c, lg_reset_tenant(c, UNKNOWN, false, NULL), LG_TENANT_NOT_FOUND);
    unsigned char page[LG_PAGE_SIZE], want[LG_PAGE_SIZE];
    fill_page(want, 1000 + 42);
    EXPECT(c, lg_get_page(c, T, key(1042), LG_LSN_LATEST, page, sizeof page, NULL), LG_OK);
    CHECK(memcmp(page, want, LG_PAGE_SIZE) == 0, "the page survives compaction and reset");
    EXPECT(c, lg_tenant_status(c, UNKNOWN, &after), LG_TENANT_NOT_FOUND);
    EXPECT(c, lg_tenant_status(c, T, NULL), LG_INVALID_ARGUMENT);
    lg_set_timeout(c, 10000);
}

static void test_server_status_and_failpoints(void) {
    lg_conn *c = shared;
    lg_server_info s;
    EXPECT(c, lg_server_status(c, &s), LG_OK);
    CHECK(s.page_cache_capacity == 64 * 128 && s.requests > 0 && s.connections >= 1 && s.version[0] != '\0',
          "capacity %llu, requests %llu, connections %u, version %s", (unsigned long long)s.page_cache_capacity,
          (unsigned long long)s.requests, s.connections, s.version);
    EXPECT(c, lg_configure_failpoint(c, "no-such-failpoint", "return"), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_configure_failpoint(c, "wal-before-fsync", "sideways"), LG_INVALID_ARGUMENT);
    EXPECT(c, lg_configure_failpoint(c, "wal-before-fsync", "off"), LG_OK);
}

/* A peer that accepts and never answers: every call ends at its timeout, and the connection stays usable. */
static void test_timeout_silent_server(void) {
    test_listener l;
    if (!listener_open(&l, 4)) { CHECK(0, "listener"); listener_close(&l); return; }
    lg_conn *c;
    EXPECT(c, lg_connect(l.path, 200, &c), LG_OK);
    unsigned char page[LG_PAGE_SIZE];
    double t0 = now_s();
    EXPECT(c, lg_get_page(c, T, key(1), 10, page, sizeof page, NULL), LG_TIMEOUT);
    double took = now_s() - t0;
    CHECK(took >= 0.19 && took < 5, "took %.3f s", took);
    CHECK(strstr(lg_errmsg(c), "200 ms") != NULL, "message: %s", lg_errmsg(c));
    lg_page_read reads[3] = {{.key = key(1), .lsn = 1, .page = page}, {.key = key(2), .lsn = 1, .page = page},
                             {.key = key(3), .lsn = 1, .page = page}};
    EXPECT(c, lg_get_pages(c, T, reads, 3), LG_TIMEOUT);
    CHECK(reads[0].status == LG_TIMEOUT && reads[2].status == LG_TIMEOUT, "each read timed out");
    lg_server_info s;
    EXPECT(c, lg_server_status(c, &s), LG_TIMEOUT);
    lg_close(c);
    listener_close(&l);
}

/* A timed-out read's answer comes later; it is recognised by its id, dropped, and the next calls get their own answers. */
static void test_timeout_then_usable(void) {
    lg_conn *c = shared;
    unsigned char page[LG_PAGE_SIZE], want[LG_PAGE_SIZE];
    lg_set_timeout(c, 100);
    lg_set_wait_lsn_ms(c, 400);  /* the server answers LSN_NOT_AVAILABLE after 400 ms: too late */
    EXPECT(c, lg_get_page(c, T, key(1), 1000000, page, sizeof page, NULL), LG_TIMEOUT);
    lg_set_timeout(c, 10000);
    lg_set_wait_lsn_ms(c, 800);  /* this call outlives the late answer above, which arrives during it */
    double t0 = now_s();
    EXPECT(c, lg_get_page(c, T, key(1), 1000000, page, sizeof page, NULL), LG_LSN_NOT_AVAILABLE);
    CHECK(now_s() - t0 >= 0.75, "got its own answer, not the late one (%.3f s)", now_s() - t0);
    lg_set_wait_lsn_ms(c, 0);
    fill_page(want, 1000 + 5);
    EXPECT(c, lg_get_page(c, T, key(1005), LG_LSN_LATEST, page, sizeof page, NULL), LG_OK);
    CHECK(memcmp(page, want, LG_PAGE_SIZE) == 0, "the connection still serves the right bytes");
}

/* The server dies while a PutRecords waits for its fsync (failpoint exit): CONNECTION_CLOSED, now and after. */
static void test_server_gone_mid_request(void) {
    test_server s = {0};
    if (!server_start(&s)) { CHECK(0, "server start"); server_cleanup(&s); return; }
    lg_conn *c = connect_or_die(&s);
    lg_conn *idle = connect_or_die(&s);  /* open while the server dies; its next call writes to a dead peer */
    EXPECT(c, lg_create_tenant(c, T), LG_OK);
    EXPECT(c, lg_configure_failpoint(c, "wal-before-fsync", "exit"), LG_OK);
    unsigned char image[LG_PAGE_SIZE];
    fill_page(image, 3);
    lg_record r = {.key = key(1), .lsn = 1, .image = image, .image_len = LG_PAGE_SIZE};
    EXPECT(c, lg_put_records(c, T, &r, 1, NULL), LG_CONNECTION_CLOSED);
    CHECK(strstr(lg_errmsg(c), "closed") != NULL, "message: %s", lg_errmsg(c));
    int status = server_wait(&s);
    CHECK(WIFEXITED(status), "the server exited (status %#x)", status);
    unsigned char page[LG_PAGE_SIZE];
    EXPECT(c, lg_get_page(c, T, key(1), 1, page, sizeof page, NULL), LG_CONNECTION_CLOSED);
    CHECK(strstr(lg_errmsg(c), "connection is closed") != NULL, "later calls say why: %s", lg_errmsg(c));
    lg_close(c);
    /* No SIGPIPE (SIG_DFL here would kill the test): the write fails, or the read sees the close. */
    EXPECT(idle, lg_get_page(idle, T, key(1), 1, page, sizeof page, NULL), LG_CONNECTION_CLOSED);
    lg_close(idle);
    lg_conn *d;
    EXPECT(d, lg_connect(s.socket, 1000, &d), LG_CONNECT_FAILED);
    lg_close(d);
    server_cleanup(&s);
}

struct killer {
    test_server *s;
    uint64_t requests_before;
    int waited;
};

/* Kills the server once it has received the batch (its request counter says so). */
static void *kill_when_received(void *arg) {
    struct killer *k = arg;
    lg_conn *c = connect_or_die(k->s);
    for (k->waited = 0; k->waited < 10000; k->waited++) {
        lg_server_info info;
        if (lg_server_status(c, &info) == LG_OK && info.requests >= k->requests_before + 50 + 1) break;
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    lg_close(c);
    server_signal(k->s, SIGKILL);
    return NULL;
}

/* SIGKILL while a pipelined batch waits: every read still unanswered gets CONNECTION_CLOSED. */
static void test_server_killed_during_batch(void) {
    test_server s = {0};
    if (!server_start(&s)) { CHECK(0, "server start"); server_cleanup(&s); return; }
    lg_conn *c = connect_or_die(&s);
    EXPECT(c, lg_create_tenant(c, T), LG_OK);
    lg_server_info info;
    EXPECT(c, lg_server_status(c, &info), LG_OK);
    struct killer k = {.s = &s, .requests_before = info.requests + 1};
    enum { N = 50 };
    static unsigned char pages[N][LG_PAGE_SIZE];
    lg_page_read reads[N];
    for (int i = 0; i < N; i++) reads[i] = (lg_page_read){.key = key((uint32_t)i), .lsn = 500, .page = pages[i]};
    lg_set_wait_lsn_ms(c, 60000);  /* LSN 500 never comes: the server holds every read */
    lg_set_timeout(c, 60000);
    pthread_t t;
    pthread_create(&t, NULL, kill_when_received, &k);
    EXPECT(c, lg_get_pages(c, T, reads, N), LG_CONNECTION_CLOSED);
    pthread_join(t, NULL);
    int closed = 0;
    for (int i = 0; i < N; i++) closed += reads[i].status == LG_CONNECTION_CLOSED;
    CHECK(closed == N, "%d of %d reads closed (killer waited %d polls)", closed, N, k.waited);
    lg_close(c);
    server_cleanup(&s);
}

static void start_shared_server(void) {
    if (!server_start(&shared_server)) {
        printf("FAIL cannot start layergated\n");
        server_cleanup(&shared_server);
        exit(1);
    }
    server_socket = shared_server.socket;
    shared = connect_or_die(&shared_server);
}

static void stop_shared_server(void) {
    lg_close(shared);
    int status = server_signal(&shared_server, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "graceful shutdown (status %#x)", status);
    server_cleanup(&shared_server);
}

int main(void) {
    signal(SIGPIPE, SIG_DFL);  /* the library must not need SIGPIPE ignored */
    static const named_test tests[] = {
        {"status names", test_status_names},
        {"connect errors", test_connect_errors},
        {"timeout against a silent server", test_timeout_silent_server},
        {"server gone mid-request", test_server_gone_mid_request},
        {"server killed during a batch", test_server_killed_during_batch},
        /* The rest share one server and, in this order, one connection and tenant. */
        {"start layergated", start_shared_server},
        {"create tenant", test_create_tenant},
        {"put records and get pages", test_put_and_get},
        {"put records errors", test_put_errors},
        {"pipelined batch of 1,000", test_batch},
        {"a request over the frame limit", test_frame_too_large},
        {"four threads, a connection each", test_threads},
        {"examples/compute_node", test_example_program},
        {"compact, tenant status, reset", test_compact_status_reset},
        {"pipelined puts", test_put_many},
        {"server status and failpoints", test_server_status_and_failpoints},
        {"timeout, then the connection is usable", test_timeout_then_usable},
        {"graceful shutdown", stop_shared_server},
    };
    return run_tests("test_client", tests, sizeof tests / sizeof tests[0]);
}
