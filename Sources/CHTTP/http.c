#define _GNU_SOURCE
#include "CHTTP.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct {
    int body_fd;
    long long body_offset;
    long long body_len;
    const void *body_buf;
    size_t body_buf_len;
    int out_fd;
    size_t max_body;
} request;

typedef struct {
    const request *req;
    lg_http_result *out;
    long long sent;   /* request body bytes handed to curl */
    int to_file;      /* the current response is a 2xx and the caller gave out_fd */
    int write_failed;
    int read_failed;  /* reading the request body's file failed */
    int local_errno;  /* errno of a failed read of the request body or write of the answer */
} transfer;

static long long body_length(const request *req) {
    return req->body_fd >= 0 ? req->body_len : (long long)req->body_buf_len;
}

static size_t read_body(char *dest, size_t size, size_t n, void *user) {
    transfer *t = user;
    long long left = body_length(t->req) - t->sent;
    if (left <= 0) return 0;
    size_t want = size * n;
    if ((long long)want > left) want = (size_t)left;
    if (t->req->body_fd < 0) {
        memcpy(dest, (const char *)t->req->body_buf + t->sent, want);
        t->sent += (long long)want;
        return want;
    }
    ssize_t got;
    do {
        got = pread(t->req->body_fd, dest, want, t->req->body_offset + t->sent);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {  /* a file that shrank under us: never send a short object */
        t->local_errno = got < 0 ? errno : 0;
        t->read_failed = 1;
        return CURL_READFUNC_ABORT;
    }
    t->sent += got;
    return (size_t)got;
}

static size_t write_body(char *src, size_t size, size_t n, void *user) {
    transfer *t = user;
    size_t len = size * n;
    if (t->to_file) {
        size_t done = 0;
        while (done < len) {
            ssize_t w = write(t->req->out_fd, src + done, len - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                t->write_failed = 1;
                t->local_errno = w < 0 ? errno : ENOSPC;
                return 0;
            }
            done += (size_t)w;
        }
        return len;
    }
    size_t room = t->req->max_body > t->out->body_len ? t->req->max_body - t->out->body_len : 0;
    size_t keep = len < room ? len : room;
    if (keep < len) t->out->body_truncated = 1;
    if (keep > 0) {
        char *grown = realloc(t->out->body, t->out->body_len + keep + 1);
        if (!grown) {
            t->write_failed = 1;
            t->local_errno = ENOMEM;
            return 0;
        }
        memcpy(grown + t->out->body_len, src, keep);
        t->out->body = grown;
        t->out->body_len += keep;
        t->out->body[t->out->body_len] = 0;
    }
    return len;
}

/* Copies the value of a "Name: value" header line, without the line end. */
static void header_value(const char *line, size_t len, size_t name_len, char *dest, size_t cap) {
    const char *v = line + name_len;
    const char *end = line + len;
    while (v < end && *v == ' ') v++;
    size_t i = 0;
    while (v + i < end && v[i] != '\r' && v[i] != '\n' && i + 1 < cap) {
        dest[i] = v[i];
        i++;
    }
    dest[i] = 0;
}

static size_t read_header(char *line, size_t size, size_t n, void *user) {
    transfer *t = user;
    size_t len = size * n;
    static const char meta[] = "x-amz-meta-crc32c:";
    static const char cl[] = "content-length:";
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue, say): forget the previous one's headers. */
        t->out->has_meta_crc32c = 0;
        t->out->content_length = -1;
        const char *sp = memchr(line, ' ', len);
        long code = sp ? strtol(sp + 1, NULL, 10) : 0;
        /* Only a successful answer's body is the object; an error's body goes to the buffer, for the message. */
        t->to_file = t->req->out_fd >= 0 && code >= 200 && code <= 299;
    } else if (len > sizeof meta - 1 && strncasecmp(line, meta, sizeof meta - 1) == 0) {
        char value[16];
        header_value(line, len, sizeof meta - 1, value, sizeof value);
        char *end = NULL;
        unsigned long v = strtoul(value, &end, 16);
        t->out->has_meta_crc32c = strlen(value) == 8 && end && *end == 0;
        t->out->meta_crc32c = (uint32_t)v;
    } else if (len > sizeof cl - 1 && strncasecmp(line, cl, sizeof cl - 1) == 0) {
        char value[32];
        header_value(line, len, sizeof cl - 1, value, sizeof value);
        t->out->content_length = strtoll(value, NULL, 10);
    }
    return len;
}

/* curl does not say why it could not make a socket, start its name lookup
   (a thread and a socket pair) or open its CA file: such a failure, with no
   error from the system call itself, while this process can open no
   descriptor, is put down to that. Only these: a store that fails otherwise
   (no answer, a timeout) is the store's fault at any descriptor count. */
static int descriptor_shortage(void) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == EMFILE || errno == ENFILE ? errno : 0;
}

int lg_http_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1; }

int lg_http_perform(const char *method, const char *url, const char *sigv4, const char *userpwd, const char *header_lines,
                    int body_fd, long long body_offset, long long body_len, const void *body_buf, size_t body_buf_len,
                    int out_fd, size_t max_body, long timeout_ms, long connect_timeout_ms, lg_http_result *out) {
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    request r = {body_fd, body_offset, body_len, body_buf, body_buf_len, out_fd, max_body};
    const request *req = &r;
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(out->error, sizeof out->error, "curl_easy_init failed");
        out->os_errno = ENOMEM;
        return -1;
    }
    transfer t = {.req = req, .out = out};
    struct curl_slist *headers = NULL;
    for (const char *line = header_lines; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        /* Any length: a session token header runs to kilobytes. */
        char *one = n > 0 ? strndup(line, n) : NULL;
        if (one) {
            headers = curl_slist_append(headers, one);
            free(one);
        }
        line = nl ? nl + 1 : line + n;
    }
    /* No "Expect: 100-continue" round trip before each upload. */
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, read_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    if (timeout_ms > 0) curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (connect_timeout_ms > 0) curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
    /* A store that stops answering mid-transfer (or never starts): give up
       after 20 s without a byte, long before the whole transfer's timeout,
       which must allow a large layer on a slow link. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 20L);
    if (sigv4) {
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4);
        curl_easy_setopt(h, CURLOPT_USERPWD, userpwd);
    }
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_body);
        curl_easy_setopt(h, CURLOPT_READDATA, &t);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_length(req));
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    out->status = rc == CURLE_OK ? status : 0;
    if (rc != CURLE_OK) {
        snprintf(out->error, sizeof out->error, "%s", t.write_failed ? "writing the response failed" : curl_easy_strerror(rc));
        long os_errno = 0;
        if (!t.local_errno) curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
        if (!t.local_errno && !os_errno) {
            if (rc == CURLE_OUT_OF_MEMORY) os_errno = ENOMEM;
            else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY
                     || rc == CURLE_SSL_CACERT_BADFILE)
                os_errno = descriptor_shortage();
        }
        out->os_errno = t.local_errno ? t.local_errno : (int)os_errno;
        /* The body's file or the answer's: this process's own disk, not the store. */
        out->local_call = (t.write_failed && t.to_file) || t.read_failed;
        if (out->os_errno) {
            size_t used = strlen(out->error);
            snprintf(out->error + used, sizeof out->error - used, " (%s)", strerror(out->os_errno));
        }
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    return rc == CURLE_OK ? 0 : -1;
}

void lg_http_result_free(lg_http_result *r) {
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}
