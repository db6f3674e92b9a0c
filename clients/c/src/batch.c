/* What the pipelined batches (lg_get_pages, lg_put_many) share: a status and a result per request. */
#include "internal.h"

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
