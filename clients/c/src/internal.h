/* Internals of liblayergate, shared by its source files; not installed. */
#ifndef LAYERGATE_INTERNAL_H
#define LAYERGATE_INTERNAL_H

#include "layergate.h"
#include "layergate.pb-c.h"

#include <stdarg.h>

typedef Layergate__V1__Request Request;
typedef Layergate__V1__Response Response;

/*
 * A bump allocator handed to protobuf-c: a request's scratch structs and an
 * answer's unpacked message live here until the next reset, so a GetPage in
 * steady state calls malloc not at all.
 */
typedef struct lg_arena_chunk lg_arena_chunk;
typedef struct lg_arena {
    unsigned char *base;
    size_t used, cap;
    lg_arena_chunk *overflow;   /* extra chunks since the last reset */
    size_t overflow_bytes;
    bool failed;                /* an allocation failed since the last reset */
    bool over_limit;            /* ... because it would pass limit */
    size_t limit;               /* bytes an unpack may take (SIZE_MAX while building requests) */
    ProtobufCAllocator allocator;
} lg_arena;

bool lg__arena_init(lg_arena *a, size_t cap);
void lg__arena_reset(lg_arena *a);
/* Beyond these, buffers and the arena are given back after each use, so one big answer does not pin memory. */
#define LG_KEEP_BYTES ((size_t)1 << 20)
/* Answers: a page (8 KiB) with its envelope, or an error message, fit in the small size; only
 * the status calls (layer lists, tenant lists) can need the large one. */
#define LG_SMALL_ANSWER_BYTES ((size_t)64 << 10)
#define LG_LARGE_ANSWER_BYTES ((size_t)64 << 20)
void lg__arena_free(lg_arena *a);
void *lg__arena_alloc(lg_arena *a, size_t size);

/* A growable byte buffer: bytes [start, end) are pending. */
typedef struct lg_buf {
    unsigned char *data;
    size_t start, end, cap;
} lg_buf;

struct lg_conn {
    int fd;                   /* -1 when closed */
    bool write_closed;        /* the server stopped reading: only its last answers are left to read */
    int timeout_ms;           /* < 0: no limit */
    uint32_t wait_lsn_ms;
    uint64_t next_id;
    lg_status last_status;
    int server_code;
    char message[512];
    char closed_reason[200];  /* why fd is -1, for later calls' messages */
    lg_buf out;               /* frames not yet written */
    lg_buf in;                /* bytes read, not yet a whole frame */
    lg_arena arena;
    char *auth_token;         /* sent with every request; NULL: none */
    size_t late_answer_limit; /* the largest answer a timed-out call may still send */
};

/*
 * One exchange: requests with ids [first_id, first_id + count) are queued in
 * conn->out; lg__exchange writes them while it reads answers and passes each
 * answer for one of those ids to on_answer (others are late answers to
 * timed-out calls, and are dropped). on_answer returns true when the answer
 * completes request `index` (false for a second answer to the same index).
 * queue, when set, encodes request `index` (id first_id + index) into conn->out:
 * the exchange calls it in order whenever conn->out holds less than queue_ahead
 * bytes, so a batch of any size is sent while its answers are read.
 */
typedef struct lg_exchange {
    size_t max_answer;   /* the biggest frame an answer to these calls can be (a server that sends more is not trusted) */
    uint64_t first_id;
    size_t count;
    size_t answered;
    bool (*on_answer)(lg_conn *conn, void *ctx, size_t index, const Response *r);
    lg_status (*queue)(lg_conn *conn, void *ctx, size_t index);
    size_t queue_ahead;
    size_t queued;
    void *ctx;
} lg_exchange;

lg_status lg__exchange(lg_conn *conn, lg_exchange *x);

/*
 * Pipelined batches (src/batch.c): each request of `items` has a status and one
 * 64-bit result (lg_page_read.read_lsn, lg_put.last_record_lsn), found by `slot`.
 */
#define LG_PENDING ((lg_status)999)  /* not an lg_status value: a request not answered yet */
typedef struct lg_batch_slot {
    lg_status *status;
    uint64_t *result;
} lg_batch_slot;
typedef lg_batch_slot (*lg_batch_slot_fn)(void *items, size_t index);
/* A call that sends nothing: every request gets status s and result 0 (none keeps a former call's). Returns s. */
lg_status lg__batch_refuse(void *items, size_t count, lg_batch_slot_fn slot, lg_status s);
/* The start of every batch call: a usable connection, a tenant id, and `what` (the array's
 * name) not NULL when count > 0; on failure every request of `items` gets that status. */
lg_status lg__batch_begin(lg_conn *c, const char *tenant_id, void *items, size_t count, lg_batch_slot_fn slot,
                          const char *what);
/* Marks every request pending and runs the exchange. A failed exchange gives every request not
 * answered its status (ids never sent are not reused); otherwise the status of the request at
 * *first_failed when it is below x->count (on_answer keeps it), else LG_OK. */
lg_status lg__batch_run(lg_conn *c, lg_exchange *x, void *items, lg_batch_slot_fn slot, const size_t *first_failed);
/* The status of request i, whose answer `r` is not the one it asked for, and, when it is the
 * first failure so far (i < *first_failed), the connection's message, prefixed in a batch by
 * "<noun> i of count: ": a server Error's own words, else `fmt` (a protocol error). */
lg_status lg__batch_failed(lg_conn *c, size_t *first_failed, size_t i, size_t count, bool batch, const char *noun,
                           const Response *r, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* A connection with no socket yet (lg_connect's first step; the fuzz harness adopts a socketpair). */
lg_status lg__conn_new(int timeout_ms, lg_conn **out);

/* Appends one frame (length + packed request) to conn->out. */
lg_status lg__queue(lg_conn *conn, Request *req);

/* Records the outcome of a call: status, message (printf-style), server code. */
lg_status lg__fail(lg_conn *conn, lg_status status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
lg_status lg__ok(lg_conn *conn);
/* Starts a call: clears the last error and checks the connection is usable. */
lg_status lg__begin(lg_conn *conn);
/* The status for a server Error, with its message recorded on the connection. */
lg_status lg__server_error(lg_conn *conn, const Layergate__V1__Error *e, const char *context);
lg_status lg__status_for_code(int code);

static inline void lg__fill_key(Layergate__V1__PageKey *out, lg_page_key key) {
    out->spc_oid = key.spc_oid, out->db_oid = key.db_oid, out->rel_number = key.rel_number;
    out->fork = key.fork, out->block = key.block;
}

/* One request, one answer: queue req, exchange, check the answer's body case. */
lg_status lg__call(lg_conn *conn, Request *req, Layergate__V1__Response__BodyCase expected, const Response **answer);

#endif
