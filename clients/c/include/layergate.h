/*
 * liblayergate: the C client of the LayerGate page server.
 *
 * One lg_conn is one connection to layergated over its Unix socket. Requests
 * and answers are protobuf messages (Protocol/layergate.proto) in
 * length-prefixed frames; this library builds them with the protoc-c output
 * generated from that file, so callers never see protobuf.
 *
 * Errors. Every call returns an lg_status: LG_OK, one of the server's error
 * codes (same names and numbers as the proto's ErrorCode), or a client-side
 * condition (LG_TIMEOUT, LG_CONNECTION_CLOSED, ...). After a failed call,
 * lg_errmsg(conn) says what happened, with the server's own message when the
 * server answered with an error.
 *
 * Timeouts. Every call that waits is bounded by the connection's timeout
 * (lg_connect's timeout_ms, changed with lg_set_timeout): the whole call,
 * sending and receiving, ends by then with LG_TIMEOUT. A timed-out request
 * may still be answered later; that late answer is recognised by its request
 * id and dropped, and the connection stays usable, unless the timeout struck
 * while a request was only partly written: then the connection is closed and
 * later calls return LG_CONNECTION_CLOSED.
 *
 * Threads. The library has no global state. A connection must not be used by
 * two threads at the same time: give each thread its own connection (the
 * server is built for many), or serialise calls on a shared one with your own
 * mutex. lg_status_name() may be called from anywhere.
 *
 * Signals. Writes use MSG_NOSIGNAL, so a server that goes away never raises
 * SIGPIPE in the caller; an interrupted wait (EINTR) is resumed with the time
 * left.
 */
#ifndef LAYERGATE_H
#define LAYERGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LG_API __attribute__((visibility("default")))
#else
#define LG_API
#endif

#define LAYERGATE_VERSION "0.2.0"   /* this library's version (the Makefile reads it from here) */

#define LG_PAGE_SIZE 8192            /* bytes in a page, and in an image record */
#define LG_TENANT_ID_LEN 32          /* hex digits in a tenant id (not counting the NUL) */
#define LG_LSN_LATEST UINT64_MAX     /* as an LSN: read at the tenant's last_record_lsn */
#define LG_DEFAULT_TIMEOUT_MS 30000  /* used when a timeout of 0 is given */

typedef enum lg_status {
    LG_OK = 0,
    /* The server's error codes: the names and numbers of layergate.proto's ErrorCode.
     * LG_INVALID_ARGUMENT is also returned, without a round trip, for arguments the
     * library can reject itself (a NULL pointer, a page buffer under LG_PAGE_SIZE). */
    LG_INVALID_ARGUMENT = 1,
    LG_TENANT_NOT_FOUND = 2,
    LG_PAGE_NOT_FOUND = 3,
    LG_LSN_NOT_AVAILABLE = 4,
    LG_TENANT_UNAVAILABLE = 5,
    LG_LAYER_EXISTS = 6,
    LG_PERMISSION_DENIED = 7,
    LG_FRAME_TOO_LARGE = 8,
    LG_INTERNAL = 9,
    LG_TENANT_EXISTS = 10,
    LG_LSN_BELOW_GC_HORIZON = 11,
    LG_RESOURCE_EXHAUSTED = 12,   /* a server limit or a full disk: nothing was stored; retry later */
    LG_UNAUTHENTICATED = 13,      /* the server checks tokens and this one is missing, bad or expired */
    /* The server answered with a code this library does not know (0, or one added by
     * a newer server); lg_server_code() has the number. */
    LG_UNKNOWN_SERVER_ERROR = 99,
    /* Client-side conditions. */
    LG_TIMEOUT = 100,            /* the call's time ran out */
    LG_CONNECT_FAILED = 101,     /* no server on that socket path, or it refused us */
    LG_CONNECTION_CLOSED = 102,  /* the server went away, or an earlier failure closed the connection */
    LG_IO_ERROR = 103,           /* a socket call failed otherwise (errno in the message) */
    LG_PROTOCOL_ERROR = 104,     /* the server sent something that is not a valid answer */
    LG_OUT_OF_MEMORY = 105,
} lg_status;

/* The proto-style name of a status: "PAGE_NOT_FOUND", "TIMEOUT", ... Never NULL. */
LG_API const char *lg_status_name(lg_status status);

typedef struct lg_conn lg_conn;

/*
 * Connects to the server listening on socket_path, waiting at most timeout_ms
 * (0: LG_DEFAULT_TIMEOUT_MS; negative: no limit) for this and every later call.
 * *out is set even when the connection fails, so that lg_errmsg(*out) can say
 * why; release it with lg_close() in both cases. Only when memory runs out is
 * *out NULL (status LG_OUT_OF_MEMORY).
 */
LG_API lg_status lg_connect(const char *socket_path, int timeout_ms, lg_conn **out);

/* Closes the connection and frees it. NULL is allowed. */
LG_API void lg_close(lg_conn *conn);

/*
 * The token (a JWT from `layergate token`) sent with every later request, for a server
 * started with --auth-public-key. The string is copied. NULL: send none. LG_INVALID_ARGUMENT
 * for an empty token, one over 4096 bytes, or one with bytes other than printable ASCII.
 */
LG_API lg_status lg_set_auth_token(lg_conn *conn, const char *token);

/* The time limit of each later call (0: LG_DEFAULT_TIMEOUT_MS; negative: no limit). */
LG_API void lg_set_timeout(lg_conn *conn, int timeout_ms);

/*
 * How long the server waits, in a GetPage for an LSN it has not ingested yet,
 * before it answers LG_LSN_NOT_AVAILABLE. 0 (the default) is the server's own
 * default (--wait-lsn-timeout-ms, 10 s). Keep it below the connection timeout.
 */
LG_API void lg_set_wait_lsn_ms(lg_conn *conn, uint32_t wait_ms);

/* The status of the last call on this connection, and what it means. */
LG_API lg_status lg_last_status(const lg_conn *conn);
/* "" after a success. Valid until the next call on the connection. NULL conn: "out of memory". */
LG_API const char *lg_errmsg(const lg_conn *conn);
/* The raw ErrorCode of the last error the server sent (0 when the last call got none). */
LG_API int lg_server_code(const lg_conn *conn);

/* A Postgres buffer tag. fork is at most 255 (the server rejects more). */
typedef struct lg_page_key {
    uint32_t spc_oid;
    uint32_t db_oid;
    uint32_t rel_number;
    uint32_t fork;
    uint32_t block;
} lg_page_key;

typedef struct lg_patch {
    uint32_t offset;   /* offset + len must stay within the page */
    const void *data;
    size_t len;        /* at least 1 */
} lg_patch;

/*
 * A page record at an LSN: an image (image != NULL: image_len bytes, which must be
 * LG_PAGE_SIZE) or a delta (image == NULL: start from a zero page if will_init, then
 * apply the patches in order).
 */
typedef struct lg_record {
    lg_page_key key;
    uint64_t lsn;
    const void *image;
    size_t image_len;
    bool will_init;
    const lg_patch *patches;
    size_t patch_count;
} lg_record;

/* Admin (needs the server's uid or root): creates a tenant; answers once it is active. */
LG_API lg_status lg_create_tenant(lg_conn *conn, const char *tenant_id);

/*
 * Stores records (non-decreasing LSNs, each above the tenant's last_record_lsn).
 * LG_OK means they are durable. The whole request is rejected or stored.
 * last_record_lsn (may be NULL) receives the tenant's new last_record_lsn.
 */
LG_API lg_status lg_put_records(lg_conn *conn, const char *tenant_id, const lg_record *records, size_t count,
                                uint64_t *last_record_lsn);

/* One put of a pipelined batch: the caller fills records and count; the call fills the rest. */
typedef struct lg_put {
    const lg_record *records;
    size_t count;
    lg_status status;           /* this put's own outcome */
    uint64_t last_record_lsn;   /* on LG_OK: the tenant's, at least this put's last LSN */
} lg_put;

/*
 * Pipelined puts to one tenant: sends every put without waiting for the one before,
 * then collects the answers by request id. The server applies the puts of one
 * connection in the order sent, and puts in flight together share a WAL fsync.
 * Returns LG_OK when every put is durable; otherwise the status of the first failed
 * put in array order, and lg_errmsg names its index. Every put has its own status:
 * one after a refused put is checked on its own and may be stored (a refusal for a
 * full disk refuses the puts queued behind it too). A connection that fails part-way
 * gives every put not yet answered that status (it may or may not have been stored).
 */
LG_API lg_status lg_put_many(lg_conn *conn, const char *tenant_id, lg_put *puts, size_t count);

/*
 * Reads a page as of lsn (LG_LSN_LATEST: as of the last ingested record) into
 * page, a buffer of page_len >= LG_PAGE_SIZE bytes, of which the first
 * LG_PAGE_SIZE are written on success (and nothing is written otherwise).
 * read_lsn (may be NULL) receives the LSN it was read at.
 */
LG_API lg_status lg_get_page(lg_conn *conn, const char *tenant_id, lg_page_key key, uint64_t lsn, void *page,
                             size_t page_len, uint64_t *read_lsn);

/* One read of a batch: the caller fills the first three fields; the call fills the rest. */
typedef struct lg_page_read {
    lg_page_key key;
    uint64_t lsn;         /* or LG_LSN_LATEST */
    void *page;           /* LG_PAGE_SIZE bytes, written when status is LG_OK */
    lg_status status;     /* this read's own outcome */
    uint64_t read_lsn;
} lg_page_read;

/*
 * Pipelined reads of one tenant: sends every read without waiting, then
 * collects the answers (which the server may send in any order) by request id,
 * reading while it writes so that neither side stalls. Returns LG_OK when every
 * read succeeded; otherwise the status of the first failed read in array order,
 * and lg_errmsg names its index. When the connection fails part-way (timeout,
 * server gone), every read not yet answered gets that status.
 */
LG_API lg_status lg_get_pages(lg_conn *conn, const char *tenant_id, lg_page_read *reads, size_t count);

typedef struct lg_compact_result {
    uint32_t layers_created;
    uint32_t layers_removed;
    uint64_t bytes_written;
} lg_compact_result;

/*
 * Admin: flushes the tenant's in-memory records to a layer, compacts, and answers
 * when done; this can take a while, so raise the timeout for it. out may be NULL.
 */
LG_API lg_status lg_compact(lg_conn *conn, const char *tenant_id, bool force_image_layers, lg_compact_result *out);

typedef struct lg_reset_result {
    uint64_t generation;   /* the tenant's new generation */
    uint32_t files_swept;  /* files the reload removed (temp files, layers the index does not list) */
} lg_reset_result;

/* Admin: reloads the tenant from its index and WAL, sweeping what the index does not list. out may be NULL. */
LG_API lg_status lg_reset_tenant(lg_conn *conn, const char *tenant_id, bool drop_cache, lg_reset_result *out);

typedef struct lg_tenant_info {
    char tenant_id[LG_TENANT_ID_LEN + 1];
    char state[16];                    /* "loading", "active", "resetting" or "broken" */
    uint64_t last_record_lsn;          /* ingested and durable */
    uint64_t disk_consistent_lsn;      /* everything at or below it is in layer files */
    uint64_t generation;               /* grows at every load (restart, reset) */
    uint32_t layer_count;
    uint32_t image_layer_count;
    uint64_t layer_bytes;              /* the layer files' total size */
    uint32_t compaction_failures;      /* consecutive; 0 after a success */
    char last_compaction_error[256];   /* "" when none; cut to fit */
    uint32_t flush_failures;           /* consecutive failed flushes of the in-memory layers; 0 after a success */
    char last_flush_error[256];        /* "" when none; cut to fit */
} lg_tenant_info;

LG_API lg_status lg_tenant_status(lg_conn *conn, const char *tenant_id, lg_tenant_info *out);

typedef struct lg_server_info {
    uint64_t page_cache_capacity;  /* pages */
    uint64_t page_cache_hits;
    uint64_t page_cache_misses;
    uint64_t requests;
    uint32_t connections;
    char version[32];
} lg_server_info;

LG_API lg_status lg_server_status(lg_conn *conn, lg_server_info *out);

/*
 * Testing: sets a failpoint ("off", "return", "exit", "sleep(MS)", "pause").
 * Needs a server started with --enable-failpoints, and the server's uid or root.
 */
LG_API lg_status lg_configure_failpoint(lg_conn *conn, const char *name, const char *action);

#ifdef __cplusplus
}
#endif

#endif /* LAYERGATE_H */
