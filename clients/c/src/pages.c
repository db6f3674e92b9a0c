/* GetPage, one at a time or pipelined: both are one exchange over a run of request ids. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* Requests queued ahead of the socket; more are encoded as these drain. */
#define QUEUE_AHEAD_BYTES ((size_t)256 << 10)

typedef struct reads_ctx {
    const char *tenant_id;
    lg_page_read *reads;
    size_t count;
    size_t first_failed;   /* lowest index that failed so far; count when none */
    bool batch;            /* name the read in messages */
} reads_ctx;

static lg_status queue_read(lg_conn *c, void *ctx, size_t index) {
    const reads_ctx *x = ctx;
    const lg_page_read *rd = &x->reads[index];
    Layergate__V1__PageKey key;
    layergate__v1__page_key__init(&key);
    lg__fill_key(&key, rd->key);
    Layergate__V1__GetPageRequest get;
    layergate__v1__get_page_request__init(&get);
    get.tenant_id = (char *)x->tenant_id;  /* protobuf-c's field is not const; packing only reads it */
    get.key = &key;
    if (rd->lsn == LG_LSN_LATEST) get.latest = 1;
    else get.lsn = rd->lsn;
    get.wait_ms = c->wait_lsn_ms;
    Request req;
    layergate__v1__request__init(&req);
    req.request_id = c->next_id++;
    req.body_case = LAYERGATE__V1__REQUEST__BODY_GET_PAGE;
    req.get_page = &get;
    return lg__queue(c, &req);
}

static bool page_answer(lg_conn *c, void *ctx, size_t i, const Response *r) {
    reads_ctx *x = ctx;
    lg_page_read *rd = &x->reads[i];
    if (rd->status != LG_PENDING) return false;
    if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_GET_PAGE && r->get_page->page.len == LG_PAGE_SIZE) {
        memcpy(rd->page, r->get_page->page.data, LG_PAGE_SIZE);
        rd->read_lsn = r->get_page->lsn;
        rd->status = LG_OK;
        return true;
    }
    if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_GET_PAGE)
        rd->status = lg__batch_failed(c, &x->first_failed, i, x->count, x->batch, "read", r,
                                      "the server sent a page of %zu bytes, not %d", r->get_page->page.len, LG_PAGE_SIZE);
    else
        rd->status = lg__batch_failed(c, &x->first_failed, i, x->count, x->batch, "read", r,
                                      "the server answered a GetPage with body %d", (int)r->body_case);
    return true;
}

static lg_batch_slot read_slot(void *items, size_t i) {
    lg_page_read *rd = (lg_page_read *)items + i;
    return (lg_batch_slot){&rd->status, &rd->read_lsn};
}

static lg_status read_pages(lg_conn *c, const char *tenant_id, lg_page_read *reads, size_t count, bool batch) {
    lg_status s = lg__batch_begin(c, tenant_id, reads, count, read_slot, "reads");
    if (s != LG_OK) return s;
    for (size_t i = 0; i < count; i++)
        if (reads[i].page == NULL)
            return lg__batch_refuse(reads, count, read_slot,
                                    lg__fail(c, LG_INVALID_ARGUMENT, "read %zu of %zu: page buffer is NULL", i, count));
    reads_ctx ctx = {.tenant_id = tenant_id, .reads = reads, .count = count, .first_failed = count, .batch = batch};
    lg_exchange x = {.max_answer = LG_SMALL_ANSWER_BYTES, .first_id = c->next_id, .count = count, .on_answer = page_answer,
                     .queue = queue_read, .queue_ahead = QUEUE_AHEAD_BYTES, .ctx = &ctx};
    return lg__batch_run(c, &x, reads, read_slot, &ctx.first_failed);
}

lg_status lg_get_pages(lg_conn *c, const char *tenant_id, lg_page_read *reads, size_t count) {
    return read_pages(c, tenant_id, reads, count, true);
}

lg_status lg_get_page(lg_conn *c, const char *tenant_id, lg_page_key key, uint64_t lsn, void *page, size_t page_len,
                      uint64_t *read_lsn) {
    if (page == NULL || page_len < LG_PAGE_SIZE) {
        lg_status s = lg__begin(c);
        if (s != LG_OK) return s;
        return lg__fail(c, LG_INVALID_ARGUMENT, "page buffer is %s%zu bytes; a page needs %d", page ? "" : "NULL, ",
                        page ? page_len : 0, LG_PAGE_SIZE);
    }
    /* page_answer copies into the caller's buffer only on success. */
    lg_page_read one = {.key = key, .lsn = lsn, .page = page};
    lg_status s = read_pages(c, tenant_id, &one, 1, false);
    if (s == LG_OK && read_lsn != NULL) *read_lsn = one.read_lsn;
    return s;
}
