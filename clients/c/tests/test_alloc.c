/*
 * The claim in the README: once warm, a GetPage (single or batched) makes no
 * heap allocation in the client. This binary wraps malloc, calloc and realloc
 * (forwarding to glibc's) and counts them around a run of reads against a real
 * layergated. Not run under valgrind, which has its own allocator.
 */
#define _GNU_SOURCE
#include "layergate.h"
#include "peer.h"
#include "server.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static const char *T = "a110c000000000000000000000000001";

static atomic_long allocations, live_bytes;

static void *counted(void *p) {
    if (p != NULL) atomic_fetch_add(&live_bytes, (long)malloc_usable_size(p));
    return p;
}
void *malloc(size_t n) { atomic_fetch_add(&allocations, 1); return counted(__libc_malloc(n)); }
void *calloc(size_t n, size_t m) { atomic_fetch_add(&allocations, 1); return counted(__libc_calloc(n, m)); }
void *realloc(void *p, size_t n) {
    atomic_fetch_add(&allocations, 1);
    if (p != NULL) atomic_fetch_sub(&live_bytes, (long)malloc_usable_size(p));
    return counted(__libc_realloc(p, n));
}
void free(void *p) {
    if (p != NULL) atomic_fetch_sub(&live_bytes, (long)malloc_usable_size(p));
    __libc_free(p);
}

/* Response{request_id = 1, tenant_status = {layers = n LayerInfo, each with a 100-byte name and a size}} */
static void long_layer_list(peer *p, size_t n) {
    const size_t entry = 2 + 100 + 2, inner = n * (2 + entry);
    unsigned char *o = big_frame(p, 3 + 4 + inner);
    *o++ = 0x08, *o++ = 0x01, *o++ = 0x7a;
    for (int i = 0; i < 4; i++) *o++ = (unsigned char)((inner >> (7 * i)) & 0x7F) | (i < 3 ? 0x80 : 0);
    for (size_t i = 0; i < n; i++) {
        *o++ = 0x32, *o++ = (unsigned char)entry;
        *o++ = 0x0a, *o++ = 100;
        memset(o, 'a', 100), o += 100;
        *o++ = 0x28, *o++ = 0x07;  /* size = 7 */
    }
}

/* A 40 MiB answer is read, and then its memory is given back: what stays is what a GetPage needs. */
static int large_answer_memory_is_given_back(void) {
    peer p = {.frames = 1, .hold_open = true};
    const size_t n = (40u << 20) / 106;
    long_layer_list(&p, n);
    peer_start(&p);
    lg_conn *c = connect_to(&p, 30000);
    long before = atomic_load(&live_bytes);
    lg_tenant_info info;
    lg_status s = lg_tenant_status(c, T, &info);
    long kept = atomic_load(&live_bytes) - before;
    int failed = 0;
    if (s != LG_OK || info.layer_count != n || info.layer_bytes != 7 * n) {
        printf("FAIL a %zu-layer status: %s: %s (%u layers)\n", n, lg_status_name(s), lg_errmsg(c), info.layer_count);
        failed = 1;
    } else if (kept > (2 << 20)) {
        printf("FAIL after a 40 MiB answer the connection keeps %ld bytes\n", kept);
        failed = 1;
    } else {
        printf("test_alloc: after a 40 MiB answer (%zu layers) the connection keeps %ld bytes more than before\n", n, kept);
    }
    lg_close(c);
    peer_stop(&p);
    return failed;
}


int main(void) {
    test_server s = {0};
    if (!server_start(&s)) { server_cleanup(&s); return 1; }
    lg_conn *c;
    int failed = 0;
    if (lg_connect(s.socket, 10000, &c) != LG_OK || lg_create_tenant(c, T) != LG_OK) {
        printf("FAIL setup: %s\n", lg_errmsg(c));
        failed = 1;
    }
    static unsigned char image[LG_PAGE_SIZE], pages[16][LG_PAGE_SIZE];
    memset(image, 0x42, sizeof image);
    lg_record recs[16];
    for (uint32_t i = 0; i < 16; i++)
        recs[i] = (lg_record){.key = {.rel_number = 7, .block = i}, .lsn = i + 1, .image = image, .image_len = LG_PAGE_SIZE};
    if (!failed && lg_put_records(c, T, recs, 16, NULL) != LG_OK) { printf("FAIL put: %s\n", lg_errmsg(c)); failed = 1; }
    lg_page_read reads[16];
    long during = -1;
    for (int round = 0; round < 2 && !failed; round++) {  /* round 0 warms the buffers */
        long before = atomic_load(&allocations);
        for (int i = 0; i < 500 && !failed; i++)
            if (lg_get_page(c, T, (lg_page_key){.rel_number = 7, .block = (uint32_t)i % 16}, 16, pages[0], LG_PAGE_SIZE, NULL) != LG_OK)
                failed = 1;
        for (int i = 0; i < 100 && !failed; i++) {
            for (uint32_t k = 0; k < 16; k++) reads[k] = (lg_page_read){.key = {.rel_number = 7, .block = k}, .lsn = LG_LSN_LATEST, .page = pages[k]};
            if (lg_get_pages(c, T, reads, 16) != LG_OK) failed = 1;
        }
        during = atomic_load(&allocations) - before;
    }
    if (failed) printf("FAIL reads: %s\n", lg_errmsg(c));
    else if (during != 0) { printf("FAIL 500 reads + 100 batches of 16 made %ld allocations\n", during); failed = 1; }
    else printf("test_alloc: 500 GetPages and 100 batches of 16 made no allocation\n");
    lg_close(c);
    server_cleanup(&s);
    failed |= large_answer_memory_is_given_back();
    return failed;
}
