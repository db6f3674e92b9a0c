/*
 * libFuzzer target: the bytes a server sends, as the client reads them. Each
 * input is the whole stream from a "server" on a socketpair (then EOF), read
 * by a run of calls: a GetPage, a TenantStatus, a batch of three GetPages and
 * a ServerStatus. Built with ASan and UBSan (make fuzz); a crash, a leak, an
 * overflow or a hang is a finding.
 */
#define _GNU_SOURCE
#include "../src/internal.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *T = "0123456789abcdef0123456789abcdef";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    for (size_t off = 0; off < size;) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0) break;
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);
    lg_conn *c;
    if (lg__conn_new(2000, &c) != LG_OK) { lg_close(c); close(sv[0]); close(sv[1]); return 0; }
    c->fd = sv[0];
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    static unsigned char pages[3][LG_PAGE_SIZE];
    lg_page_key key = {.spc_oid = 1663, .db_oid = 5, .rel_number = 1000};
    uint64_t lsn;
    (void)lg_get_page(c, T, key, 10, pages[0], LG_PAGE_SIZE, &lsn);
    lg_tenant_info info;
    (void)lg_tenant_status(c, T, &info);
    lg_page_read reads[3];
    for (int i = 0; i < 3; i++) reads[i] = (lg_page_read){.key = key, .lsn = LG_LSN_LATEST, .page = pages[i]};
    (void)lg_get_pages(c, T, reads, 3);
    lg_server_info server;
    (void)lg_server_status(c, &server);
    (void)lg_errmsg(c);
    lg_close(c);  /* closes sv[0] */
    close(sv[1]);
    return 0;
}
