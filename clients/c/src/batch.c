/* What the pipelined batches (lg_get_pages, lg_put_many) share: a status and a result per request. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

lg_status lg__batch_refuse(void *items, size_t count, lg_batch_slot_fn slot, lg_status s) {
    for (size_t i = 0; items != NULL && i < count; i++) {
        lg_batch_slot at = slot(items, i);
        *at.status = s;
        *at.result = 0;
    }
    return s;
}

lg_status lg__batch_begin(lg_conn *c, const char *tenant_id, void *items, size_t count, lg_batch_slot_fn slot,
                          const char *what) {
    lg_status s = lg__begin(c);
    if (s != LG_OK) return lg__batch_refuse(items, count, slot, s);
    if (tenant_id == NULL) return lg__batch_refuse(items, count, slot, lg__fail(c, LG_INVALID_ARGUMENT, "tenant id is NULL"));
    if (count > 0 && items == NULL) return lg__fail(c, LG_INVALID_ARGUMENT, "%s is NULL", what);
    return LG_OK;
}

lg_status lg__batch_run(lg_conn *c, lg_exchange *x, void *items, lg_batch_slot_fn slot, const size_t *first_failed) {
    lg__batch_refuse(items, x->count, slot, LG_PENDING);
    if (x->count == 0) return lg__ok(c);
    lg_status s = lg__exchange(c, x);
    if (s != LG_OK) {
        for (size_t i = 0; i < x->count; i++) {
            lg_batch_slot at = slot(items, i);
            if (*at.status == LG_PENDING) *at.status = s;
        }
        c->next_id = x->first_id + x->count;  /* ids of requests never sent are not reused */
        return s;
    }
    if (*first_failed < x->count) {
        c->last_status = *slot(items, *first_failed).status;
        return c->last_status;
    }
    return lg__ok(c);
}

lg_status lg__batch_failed(lg_conn *c, size_t *first_failed, size_t i, size_t count, bool batch, const char *noun,
                           const Response *r, const char *fmt, ...) {
    bool server = r->body_case == LAYERGATE__V1__RESPONSE__BODY_ERROR;
    lg_status s = server ? lg__status_for_code((int)r->error->code) : LG_PROTOCOL_ERROR;
    if (i >= *first_failed) return s; /* the message stays with the first failed request */
    *first_failed = i;
    char context[64] = "";
    if (batch) snprintf(context, sizeof context, "%s %zu of %zu: ", noun, i, count);
    if (server) {
        lg__server_error(c, r->error, context);
        return s;
    }
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    lg__fail(c, s, "%s%s", context, what);
    return s;
}
