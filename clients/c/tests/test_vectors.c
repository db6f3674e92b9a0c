/*
 * Cross-language conformance: decodes every Protocol/testdata vector with the
 * protoc-c generated code and re-encodes it; the bytes must be the same. The
 * Swift Wire tests do the same with the same files.
 */
#define _DEFAULT_SOURCE
#include "layergate.pb-c.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *p = realloc(buf, cap);
            if (p == NULL) { free(buf); fclose(f); return NULL; }
            buf = p;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0) break;
        *len += n;
    }
    fclose(f);
    return buf;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Returns 0 when the vector round-trips. */
static int check(const char *dir, const char *name, int *requests, int *responses, unsigned *kinds, unsigned *codes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    unsigned char *in = read_file(path, &len);
    if (in == NULL) { printf("FAIL %s: cannot read\n", name); return 1; }
    int is_request = strncmp(name, "request-", 8) == 0;
    ProtobufCMessage *m = is_request ? (ProtobufCMessage *)layergate__v1__request__unpack(NULL, len, in)
                                     : (ProtobufCMessage *)layergate__v1__response__unpack(NULL, len, in);
    int bad = 0;
    if (m == NULL) {
        printf("FAIL %s: does not decode\n", name);
        free(in);
        return 1;
    }
    size_t size = protobuf_c_message_get_packed_size(m);
    unsigned char *out = malloc(size ? size : 1);
    if (out == NULL || protobuf_c_message_pack(m, out) != size || size != len || memcmp(in, out, len) != 0) {
        printf("FAIL %s: re-encoded to %zu bytes that differ from its %zu\n", name, size, len);
        bad = 1;
    }
    if (is_request) {
        (*requests)++;
        kinds[0] |= 1u << ((Layergate__V1__Request *)m)->body_case % 32;
    } else {
        Layergate__V1__Response *r = (Layergate__V1__Response *)m;
        (*responses)++;
        kinds[1] |= 1u << r->body_case % 32;
        if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR && r->error->code >= 0 && r->error->code < 32)
            *codes |= 1u << r->error->code;
        if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_GET_PAGE && r->get_page->page.len == 8192) kinds[2] = 1;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free(out);
    free(in);
    return bad;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../../Protocol/testdata";
    DIR *d = opendir(dir);
    if (d == NULL) { printf("FAIL: cannot open %s\n", dir); return 1; }
    int failed = 0, requests = 0, responses = 0;
    unsigned kinds[3] = {0}, codes = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (ends_with(e->d_name, ".bin")) failed += check(dir, e->d_name, &requests, &responses, kinds, &codes);
    closedir(d);
    /* Every body kind (and no body), every code 0..13, a full page: nothing left untested by accident. */
    unsigned want_requests = 1u << 0, want_responses = 1u << 0 | 1u << 2;
    for (int k = 10; k <= 18; k++) want_requests |= 1u << k, want_responses |= 1u << k;
    if ((kinds[0] & want_requests) != want_requests) { printf("FAIL: request kinds seen %#x, want %#x\n", kinds[0], want_requests); failed++; }
    if ((kinds[1] & want_responses) != want_responses) { printf("FAIL: response kinds seen %#x, want %#x\n", kinds[1], want_responses); failed++; }
    if ((codes & 0x3FFFu) != 0x3FFFu) { printf("FAIL: error codes seen %#x, want 0..13\n", codes); failed++; }
    if (!kinds[2]) { printf("FAIL: no GetPageResponse with a full page\n"); failed++; }
    printf("test_vectors: %d requests, %d responses decoded and re-encoded to the same bytes; %d failures\n", requests,
           responses, failed);
    return failed ? 1 : 0;
}
