/* The request/answer calls other than GetPage: build the request, one exchange, read the answer. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static Request new_request(void) {
    Request req;
    layergate__v1__request__init(&req);
    return req;
}

#define CHECK_TENANT(c, tenant_id)                                                      \
    do {                                                                                \
        lg_status s_ = lg__begin(c);                                                    \
        if (s_ != LG_OK) return s_;                                                     \
        if ((tenant_id) == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "tenant id is NULL"); \
    } while (0)

lg_status lg_create_tenant(lg_conn *c, const char *tenant_id) {
    CHECK_TENANT(c, tenant_id);
    Layergate__V1__CreateTenantRequest body;
    layergate__v1__create_tenant_request__init(&body);
    body.tenant_id = (char *)tenant_id;  /* protobuf-c's fields are not const; packing only reads them */
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_CREATE_TENANT;
    req.create_tenant = &body;
    const Response *r;
    return lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_CREATE_TENANT, &r);
}

/* Builds record i's protobuf-c struct in the arena. */
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

lg_status lg_put_records(lg_conn *c, const char *tenant_id, const lg_record *records, size_t count,
                         uint64_t *last_record_lsn) {
    CHECK_TENANT(c, tenant_id);
    if (count > 0 && records == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "records is NULL");
    for (size_t i = 0; i < count; i++) {
        const lg_record *rec = &records[i];
        if (rec->image == NULL && rec->patch_count > 0 && rec->patches == NULL)
            return lg__fail(c, LG_INVALID_ARGUMENT, "record %zu: patches is NULL", i);
        for (size_t p = 0; rec->image == NULL && p < rec->patch_count; p++)
            if (rec->patches[p].data == NULL && rec->patches[p].len > 0)
                return lg__fail(c, LG_INVALID_ARGUMENT, "record %zu: patch %zu: data is NULL", i, p);
    }
    lg__arena_reset(&c->arena);
    Layergate__V1__Record **ptrs = lg__arena_alloc(&c->arena, sizeof *ptrs * (count ? count : 1));
    if (ptrs == NULL) return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory for %zu records", count);
    for (size_t i = 0; i < count; i++)
        if ((ptrs[i] = build_record(c, &records[i])) == NULL)
            return lg__fail(c, LG_OUT_OF_MEMORY, "out of memory for %zu records", count);
    Layergate__V1__PutRecordsRequest body;
    layergate__v1__put_records_request__init(&body);
    body.tenant_id = (char *)tenant_id;
    body.n_records = count;
    body.records = ptrs;
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_PUT_RECORDS;
    req.put_records = &body;
    const Response *r;
    lg_status s = lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_PUT_RECORDS, &r);
    if (s == LG_OK && last_record_lsn != NULL) *last_record_lsn = r->put_records->last_record_lsn;
    return s;
}

lg_status lg_compact(lg_conn *c, const char *tenant_id, bool force_image_layers, lg_compact_result *out) {
    CHECK_TENANT(c, tenant_id);
    Layergate__V1__CompactRequest body;
    layergate__v1__compact_request__init(&body);
    body.tenant_id = (char *)tenant_id;
    body.force_image_layers = force_image_layers;
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_COMPACT;
    req.compact = &body;
    const Response *r;
    lg_status s = lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_COMPACT, &r);
    if (s == LG_OK && out != NULL)
        *out = (lg_compact_result){.layers_created = r->compact->layers_created,
                                   .layers_removed = r->compact->layers_removed,
                                   .bytes_written = r->compact->bytes_written};
    return s;
}

lg_status lg_reset_tenant(lg_conn *c, const char *tenant_id, bool drop_cache, lg_reset_result *out) {
    CHECK_TENANT(c, tenant_id);
    Layergate__V1__ResetTenantRequest body;
    layergate__v1__reset_tenant_request__init(&body);
    body.tenant_id = (char *)tenant_id;
    body.drop_cache = drop_cache;
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_RESET_TENANT;
    req.reset_tenant = &body;
    const Response *r;
    lg_status s = lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_RESET_TENANT, &r);
    if (s == LG_OK && out != NULL)
        *out = (lg_reset_result){.generation = r->reset_tenant->generation, .files_swept = r->reset_tenant->files_swept};
    return s;
}

lg_status lg_tenant_status(lg_conn *c, const char *tenant_id, lg_tenant_info *out) {
    CHECK_TENANT(c, tenant_id);
    if (out == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "status output is NULL");
    Layergate__V1__TenantStatusRequest body;
    layergate__v1__tenant_status_request__init(&body);
    body.tenant_id = (char *)tenant_id;
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_TENANT_STATUS;
    req.tenant_status = &body;
    const Response *r;
    lg_status s = lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_TENANT_STATUS, &r);
    if (s != LG_OK) return s;
    const Layergate__V1__TenantStatusResponse *t = r->tenant_status;
    *out = (lg_tenant_info){.last_record_lsn = t->last_record_lsn,
                              .disk_consistent_lsn = t->disk_consistent_lsn,
                              .generation = t->generation,
                              .layer_count = (uint32_t)t->n_layers,
                              .compaction_failures = t->compaction_failures,
                              .flush_failures = t->flush_failures};
    snprintf(out->tenant_id, sizeof out->tenant_id, "%s", t->tenant_id);
    snprintf(out->state, sizeof out->state, "%s", t->state);
    snprintf(out->last_compaction_error, sizeof out->last_compaction_error, "%s", t->last_compaction_error);
    snprintf(out->last_flush_error, sizeof out->last_flush_error, "%s", t->last_flush_error);
    for (size_t i = 0; i < t->n_layers; i++) {
        if (t->layers[i]->is_image) out->image_layer_count++;
        out->layer_bytes += t->layers[i]->size;
    }
    lg__arena_reset(&c->arena);  /* everything is copied out: a long layer list is given back now */
    return LG_OK;
}

lg_status lg_server_status(lg_conn *c, lg_server_info *out) {
    lg_status s = lg__begin(c);
    if (s != LG_OK) return s;
    if (out == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "status output is NULL");
    Layergate__V1__ServerStatusRequest body;
    layergate__v1__server_status_request__init(&body);
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_SERVER_STATUS;
    req.server_status = &body;
    const Response *r;
    s = lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_SERVER_STATUS, &r);
    if (s != LG_OK) return s;
    const Layergate__V1__ServerStatusResponse *v = r->server_status;
    *out = (lg_server_info){.page_cache_capacity = v->page_cache_capacity,
                              .page_cache_hits = v->page_cache_hits,
                              .page_cache_misses = v->page_cache_misses,
                              .requests = v->requests,
                              .connections = v->connections};
    snprintf(out->version, sizeof out->version, "%s", v->version);
    return LG_OK;
}

lg_status lg_configure_failpoint(lg_conn *c, const char *name, const char *action) {
    lg_status s = lg__begin(c);
    if (s != LG_OK) return s;
    if (name == NULL || action == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "failpoint name or action is NULL");
    Layergate__V1__Failpoint fp;
    layergate__v1__failpoint__init(&fp);
    fp.name = (char *)name;
    fp.action = (char *)action;
    Layergate__V1__Failpoint *list[1] = {&fp};
    Layergate__V1__ConfigureFailpointsRequest body;
    layergate__v1__configure_failpoints_request__init(&body);
    body.n_failpoints = 1;
    body.failpoints = list;
    Request req = new_request();
    req.body_case = LAYERGATE__V1__REQUEST__BODY_CONFIGURE_FAILPOINTS;
    req.configure_failpoints = &body;
    const Response *r;
    return lg__call(c, &req, LAYERGATE__V1__RESPONSE__BODY_CONFIGURE_FAILPOINTS, &r);
}
