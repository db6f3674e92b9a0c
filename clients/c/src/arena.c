/* The bump allocator that protobuf-c packs and unpacks through (see internal.h). */
#include "internal.h"

#include <stdlib.h>

struct lg_arena_chunk {
    lg_arena_chunk *next;
    max_align_t data[];
};

static void *arena_alloc_cb(void *data, size_t size) { return lg__arena_alloc(data, size); }
static void arena_free_cb(void *data, void *ptr) { (void)data, (void)ptr; }  /* freed at reset */

bool lg__arena_init(lg_arena *a, size_t cap) {
    *a = (lg_arena){0};
    a->base = malloc(cap);
    if (a->base == NULL) return false;
    a->cap = cap;
    a->limit = SIZE_MAX;
    a->allocator = (ProtobufCAllocator){.alloc = arena_alloc_cb, .free = arena_free_cb, .allocator_data = a};
    return true;
}

void *lg__arena_alloc(lg_arena *a, size_t size) {
    const size_t align = _Alignof(max_align_t);
    size_t rounded = (size + align - 1) & ~(align - 1);
    if (rounded < size) { a->failed = true; return NULL; }
    if (rounded > a->limit || a->used + a->overflow_bytes > a->limit - rounded) {
        a->failed = a->over_limit = true;
        return NULL;
    }
#ifndef LG_ARENA_EACH_MALLOC  /* sanitizer builds: each allocation its own block, so overruns are seen */
    if (a->cap - a->used >= rounded) {
        void *p = a->base + a->used;
        a->used += rounded;
        return p;
    }
#endif
    lg_arena_chunk *c = malloc(sizeof *c + rounded);
    if (c == NULL) { a->failed = true; return NULL; }
    c->next = a->overflow;
    a->overflow = c;
    a->overflow_bytes += rounded;
    return c->data;
}

void lg__arena_reset(lg_arena *a) {
    size_t need = a->used + a->overflow_bytes;
    while (a->overflow != NULL) {
        lg_arena_chunk *next = a->overflow->next;
        free(a->overflow);
        a->overflow = next;
    }
    /* Grow to what the last message needed, so the next one like it fits in one block; but
     * only up to LG_KEEP_BYTES, so that one large answer is given back after its call. */
    if (a->overflow_bytes > 0 && need <= LG_KEEP_BYTES) {
        unsigned char *bigger = malloc(need);
        if (bigger != NULL) {
            free(a->base);
            a->base = bigger;
            a->cap = need;
        }
    }
    a->overflow_bytes = 0;
    a->used = 0;
    a->failed = a->over_limit = false;
    a->limit = SIZE_MAX;
}

void lg__arena_free(lg_arena *a) {
    lg__arena_reset(a);
    free(a->base);
    *a = (lg_arena){0};
}
