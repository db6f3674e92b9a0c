/*
 * GetPage requests and their answers as frames (a 4-byte big-endian length,
 * then the protobuf), for the epoll clients of both benches, which speak the
 * wire protocol on plain non-blocking sockets (liblayergate's calls block).
 */
#include "bench.h"

#include <layergate.pb-c.h>

#include <stdio.h>
#include <string.h>

/* The most an answer may be: an 8 KiB page and its envelope, or an error message. */
enum { MAX_ANSWER = 64 << 10 };

size_t page_request_max(const char *tenant, const char *token) {
    /* Its header, the tenant id and the token with their lengths, under 64 bytes of ids, key and LSN. */
    return 4 + 64 + strlen(tenant) + 8 + (token ? strlen(token) + 8 : 0);
}

size_t page_answer_max(void) { return 4 + LG_PAGE_SIZE + 256; }

size_t page_answer_limit(void) { return 4 + MAX_ANSWER; }

size_t page_request(unsigned char *at, uint64_t id, const char *tenant, const char *token, lg_page_key k, uint64_t lsn) {
    Layergate__V1__PageKey pk = LAYERGATE__V1__PAGE_KEY__INIT;
    pk.spc_oid = k.spc_oid, pk.db_oid = k.db_oid, pk.rel_number = k.rel_number, pk.fork = k.fork, pk.block = k.block;
    Layergate__V1__GetPageRequest gp = LAYERGATE__V1__GET_PAGE_REQUEST__INIT;
    gp.tenant_id = (char *)tenant, gp.key = &pk;
    if (lsn == LG_LSN_LATEST) gp.latest = 1; else gp.lsn = lsn;
    Layergate__V1__Request r = LAYERGATE__V1__REQUEST__INIT;
    r.request_id = id;
    if (token) r.auth_token = (char *)token;
    r.body_case = LAYERGATE__V1__REQUEST__BODY_GET_PAGE, r.get_page = &gp;
    size_t n = layergate__v1__request__pack(&r, at + 4);
    at[0] = (unsigned char)(n >> 24), at[1] = (unsigned char)(n >> 16), at[2] = (unsigned char)(n >> 8), at[3] = (unsigned char)n;
    return 4 + n;
}

int server_code_slot(long code) { return code >= LG_INVALID_ARGUMENT && code <= LG_UNAUTHENTICATED ? (int)code : LG_UNKNOWN_SERVER_ERROR; }

long take_pages(const unsigned char *in, size_t len, int *answers, page_check check, void *ctx, int conn,
                unsigned long *errors, char *error, size_t error_len) {
    size_t at = 0;
    while (len - at >= 4) {
        const unsigned char *h = in + at;
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n > MAX_ANSWER) { snprintf(error, error_len, "an answer of %zu bytes", n); return -1; }
        if (len - at < 4 + n) break;
        Layergate__V1__Response *r = layergate__v1__response__unpack(NULL, n, h + 4);
        if (r == NULL) { snprintf(error, error_len, "an answer that does not decode"); return -1; }
        bool page = r->body_case == LAYERGATE__V1__RESPONSE__BODY_GET_PAGE && r->get_page && r->get_page->page.len == LG_PAGE_SIZE;
        int rc = 0;
        /* Counted, also an answer to request 0, which comes before the server closes the connection: the next read says so. */
        if (!page && errors && r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR && r->error) {
            errors[server_code_slot(r->error->code)]++;
        } else if (!page) {
            if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR && r->error)
                snprintf(error, error_len, "server error %d: %s", (int)r->error->code, r->error->message);
            else
                snprintf(error, error_len, "an answer that is not an 8 KiB page");
            rc = -1;
        } else if (check) {
            rc = check(ctx, conn, r->request_id, r->get_page->page.data, error, error_len);
        }
        layergate__v1__response__free_unpacked(r, NULL);
        if (rc != 0) return -1;
        (*answers)++;
        at += 4 + n;
    }
    return (long)at;
}
