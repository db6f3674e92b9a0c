/* PutRecords, one at a time or pipelined: both are one exchange over a run of request ids. */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>

/* Requests queued ahead of the socket; more are encoded as these drain. */
#define QUEUE_AHEAD_BYTES ((size_t)1 << 20)

/* Builds a record's protobuf-c struct in the arena (the bytes stay the caller's). */
static Layergate__V1__Record *build_record(lg_conn *c, const lg_record *in) {
    lg_arena *a = &c->arena;
    Layergate__V1__Record *r = lg__arena_alloc(a, sizeof *r);
    Layergate__V1__PageKey *k = lg__arena_alloc(a, sizeof *k);
    if (r == NULL || k == NULL) return NULL;
    layergate__v1__record__init(r);
    layergate__v1__page_key__init(k);
    lg__fill_key(k, in->key);
    r->key = k;
    r->lsn = in->lsn;
    if (in->image != NULL) {
        r->value_case = LAYERGATE__V1__RECORD__VALUE_IMAGE;
        r->image.data = (uint8_t *)in->image;
        r->image.len = in->image_len;
        return r;
    }
    Layergate__V1__DeltaRecord *d = lg__arena_alloc(a, sizeof *d);
    Layergate__V1__Patch **ptrs = lg__arena_alloc(a, sizeof *ptrs * (in->patch_count ? in->patch_count : 1));
    Layergate__V1__Patch *patches = lg__arena_alloc(a, sizeof *patches * (in->patch_count ? in->patch_count : 1));
    if (d == NULL || ptrs == NULL || patches == NULL) return NULL;
    layergate__v1__delta_record__init(d);
    d->will_init = in->will_init;
    d->n_patches = in->patch_count;
    d->patches = ptrs;
    for (size_t p = 0; p < in->patch_count; p++) {
        layergate__v1__patch__init(&patches[p]);
        patches[p].offset = in->patches[p].offset;
        patches[p].data.data = (uint8_t *)in->patches[p].data;
        patches[p].data.len = in->patches[p].len;
        ptrs[p] = &patches[p];
    }
    r->value_case = LAYERGATE__V1__RECORD__VALUE_DELTA;
    r->delta = d;
    return r;
}

typedef struct puts_ctx {
    const char *tenant_id;
    lg_put *puts;
    size_t count;
    size_t first_failed;  /* lowest index that failed so far; count when none */
    bool batch;           /* name the put in messages */
} puts_ctx;

/* What the caller's arrays must hold before anything is sent. */
static lg_status check_put(lg_conn *c, const puts_ctx *x, size_t i) {
    const lg_put *p = &x->puts[i];
    char context[64] = "";
    if (x->batch) snprintf(context, sizeof context, "put %zu of %zu: ", i, x->count);
    if (p->count > 0 && p->records == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "%srecords is NULL", context);
    for (size_t r = 0; r < p->count; r++) {
        const lg_record *rec = &p->records[r];
        if (rec->image == NULL && rec->patch_count > 0 && rec->patches == NULL)
            return lg__fail(c, LG_INVALID_ARGUMENT, "%srecord %zu: patches is NULL", context, r);
        for (size_t q = 0; rec->image == NULL && q < rec->patch_count; q++)
            if (rec->patches[q].data == NULL && rec->patches[q].len > 0)
                return lg__fail(c, LG_INVALID_ARGUMENT, "%srecord %zu: patch %zu: data is NULL", context, r, q);
    }
    return LG_OK;
}

/* Encodes the next put into conn->out; its scratch structs live in the arena only until then. */
static lg_status queue_put(lg_conn *c, void *ctx, size_t index) {
    const puts_ctx *x = ctx;
    const lg_put *p = &x->puts[index];
    lg__arena_reset(&c->arena);
    c->arena.limit = SIZE_MAX;  /* an answer's unpack left its own limit */
    Layergate__V1__Record **ptrs = lg__arena_alloc(&c->arena, sizeof *ptrs * (p->count ? p->count : 1));
    if (ptrs == NULL) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory for %zu records", p->count);
    for (size_t i = 0; i < p->count; i++)
        if ((ptrs[i] = build_record(c, &p->records[i])) == NULL)
            return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory for %zu records", p->count);
    Layergate__V1__PutRecordsRequest body;
    layergate__v1__put_records_request__init(&body);
    body.tenant_id = (char *)x->tenant_id;  /* protobuf-c's fields are not const; packing only reads them */
    body.n_records = p->count;
    body.records = ptrs;
    Request req;
    layergate__v1__request__init(&req);
    req.request_id = c->next_id++;
    req.body_case = LAYERGATE__V1__REQUEST__BODY_PUT_RECORDS;
    req.put_records = &body;
    return lg__queue(c, &req);
}

static bool put_answer(lg_conn *c, void *ctx, size_t i, const Response *r) {
    puts_ctx *x = ctx;
    lg_put *p = &x->puts[i];
    if (p->status != LG_PENDING) return false;
    if (r->body_case == LAYERGATE__V1__RESPONSE__BODY_PUT_RECORDS) {
        p->last_record_lsn = r->put_records->last_record_lsn;
        p->status = LG_OK;
        return true;
    }
    p->status = lg__batch_failed(c, &x->first_failed, i, x->count, x->batch, "put", r,
                                 "the server answered a PutRecords with body %d", (int)r->body_case);
    return true;
}

static lg_batch_slot put_slot(void *items, size_t i) {
    lg_put *p = (lg_put *)items + i;
    return (lg_batch_slot){&p->status, &p->last_record_lsn};
}

static lg_status put_all(lg_conn *c, const char *tenant_id, lg_put *puts, size_t count, bool batch) {
    lg_status s = lg__batch_begin(c, tenant_id, puts, count, put_slot, "puts");
    if (s != LG_OK) return s;
    puts_ctx ctx = {.tenant_id = tenant_id, .puts = puts, .count = count, .first_failed = count, .batch = batch};
    for (size_t i = 0; i < count; i++)
        if ((s = check_put(c, &ctx, i)) != LG_OK) return lg__batch_refuse(puts, count, put_slot, s);
    lg_exchange x = {.max_answer = LG_SMALL_ANSWER_BYTES, .first_id = c->next_id, .count = count, .on_answer = put_answer,
                     .queue = queue_put, .queue_ahead = QUEUE_AHEAD_BYTES, .ctx = &ctx};
    return lg__batch_run(c, &x, puts, put_slot, &ctx.first_failed);
}

lg_status lg_put_many(lg_conn *c, const char *tenant_id, lg_put *puts, size_t count) {
    return put_all(c, tenant_id, puts, count, true);
}

lg_status lg_put_records(lg_conn *c, const char *tenant_id, const lg_record *records, size_t count,
                         uint64_t *last_record_lsn) {
    lg_put one = {.records = records, .count = count};
    lg_status s = put_all(c, tenant_id, &one, 1, false);
    if (s == LG_OK && last_record_lsn != NULL) *last_record_lsn = one.last_record_lsn;
    return s;
}
