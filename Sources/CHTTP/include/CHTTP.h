#ifndef LAYERGATE_CHTTP_H
#define LAYERGATE_CHTTP_H

#include <stddef.h>
#include <stdint.h>

/* One HTTP request through libcurl, signed with AWS SigV4 when `sigv4` is set
 * (libcurl's CURLOPT_AWS_SIGV4: no hand-written HTTP or signing here). The
 * request body comes from a file range or a buffer; the response body goes to
 * a file or to a buffer of at most `max_body` bytes. */
typedef struct {
    long status;                 /* HTTP status; 0 when no answer came (then `error` says why) */
    char *body;                  /* malloc'd response body (buffer mode), NUL-terminated; free with lg_http_result_free */
    size_t body_len;
    int body_truncated;          /* the body was larger than max_body */
    int has_meta_crc32c;         /* the answer carried x-amz-meta-crc32c (8 hex digits) */
    uint32_t meta_crc32c;
    long long content_length;    /* -1 if absent */
    char error[256];
    int os_errno;                /* a failed transfer: errno of this process's own call (writing the answer to
                                    out_fd, reading the request body, curl's socket), 0 when none is known */
    int local_call;              /* that call was on this process's own files: writing the answer to out_fd
                                    or reading the request body */
} lg_http_result;

/* method: GET, PUT, HEAD or DELETE. sigv4: "aws:amz:REGION:s3", or NULL for
 * no signing; userpwd: "ACCESS_KEY:SECRET_KEY". headers: "Name: value" lines
 * separated by '\n'. A PUT sends body_len bytes of body_fd from body_offset
 * when body_fd >= 0, else the buffer. With out_fd >= 0 a 2xx answer's body is
 * written to it; any other body is kept in out->body, at most max_body bytes.
 * Returns 0 when the transfer completed (whatever the HTTP status), -1 if not. */
int lg_http_perform(const char *method, const char *url, const char *sigv4, const char *userpwd, const char *headers,
                    int body_fd, long long body_offset, long long body_len, const void *body_buf, size_t body_buf_len,
                    int out_fd, size_t max_body, long timeout_ms, long connect_timeout_ms, lg_http_result *out);
void lg_http_result_free(lg_http_result *result);
/* Once per process, before threads use lg_http_perform. */
int lg_http_global_init(void);

#endif
