/*
 * The claim in the README: once warm, a GetPage (single or batched) makes no
 * heap allocation in the client. This binary wraps malloc, calloc and realloc
 * (forwarding to glibc's) and counts them around a run of reads against a real
 * layergated. Not run under valgrind, which has its own allocator.
 */
#define _GNU_SOURCE
#include "layergate.h"
#include "server.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static atomic_long allocations;

void *malloc(size_t n) { atomic_fetch_add(&allocations, 1); return __libc_malloc(n); }
void *calloc(size_t n, size_t m) { atomic_fetch_add(&allocations, 1); return __libc_calloc(n, m); }
void *realloc(void *p, size_t n) { atomic_fetch_add(&allocations, 1); return __libc_realloc(p, n); }

static const char *T = "a110c000000000000000000000000001";

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
    return failed;
}
