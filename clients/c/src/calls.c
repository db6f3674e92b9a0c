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
