#define _GNU_SOURCE
#include "CSystemShims.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(sizeof(lg_peer_credentials) == sizeof(struct ucred), "lg_peer_credentials must be struct ucred");

int lg_so_peercred(void) { return SO_PEERCRED; }

void lg_name_thread(const char *name) { (void)pthread_setname_np(pthread_self(), name); }

int lg_o_direct(void) { return O_DIRECT; }

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

ssize_t lg_pread_nowait(int fd, void *buf, size_t count, off_t offset) {
    struct iovec iov = { .iov_base = buf, .iov_len = count };
    return preadv2(fd, &iov, 1, offset, RWF_NOWAIT);
}

long lg_resident_pages(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    if (st.st_size == 0) return 0;
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = ((size_t)st.st_size + (size_t)page - 1) / (size_t)page;
    unsigned char *vector = malloc(pages);
    if (vector == NULL) return -1;
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { free(vector); return -1; }
    long resident = -1;
    if (mincore(map, (size_t)st.st_size, vector) == 0) {
        resident = 0;
        for (size_t i = 0; i < pages; i++) resident += vector[i] & 1;
    }
    munmap(map, (size_t)st.st_size);
    free(vector);
    return resident;
}

void lg_release_free_heap(void) { malloc_trim(0); }

int lg_accept_nonblocking(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

int lg_rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, RENAME_NOREPLACE);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static uint32_t crc_table[8][256];
static int crc_table_ready;

static void crc_init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
    __atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t lg_crc32c_portable(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE)) crc_init_table();
    const unsigned char *p = data;
    crc = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^ crc_table[5][(w >> 16) & 0xff] ^
              crc_table[4][(w >> 24) & 0xff] ^ crc_table[3][(w >> 32) & 0xff] ^
              crc_table[2][(w >> 40) & 0xff] ^ crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        length -= 8;
    }
    while (length--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Multiplication modulo the CRC-32C polynomial, reflected: shifting a raw CRC
 * state over n zero bytes is a multiplication by x^(8n) mod P. */
#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_multmodp(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return p;
}

/* x^(8 * n) mod P, by squaring. */
static uint32_t crc_x8nmodp(size_t n) {
    uint32_t p = 1u << 31;     /* x^0 */
    uint32_t sq = 1u << 23;    /* x^8 */
    while (n) {
        if (n & 1) p = crc_multmodp(sq, p);
        sq = crc_multmodp(sq, sq);
        n >>= 1;
    }
    return p;
}

uint32_t lg_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t length_b) {
    return crc_multmodp(crc_x8nmodp(length_b), crc_a) ^ crc_b;
}

#if defined(__x86_64__)
/* Independent crc32q chains hide the instruction's 3-cycle latency: four
 * lanes where they fit (an 8 KiB page is exactly one round: 360 ns against
 * 470 with three lanes and a serial 2 KiB tail), then three. */
#define CRC_LANE 2048
static uint32_t crc_lane_shift;  /* x^(8 * CRC_LANE) mod P, set once */

/* One round of `lanes` chains (4, or 3 for what is left) over lanes × CRC_LANE
 * bytes. Always inlined with a constant `lanes` and fully unrolled, so the
 * chains live in registers: a plain loop over the lanes kept them in memory
 * (790 ns a page against 360). */
__attribute__((target("sse4.2"), always_inline))
static inline uint64_t crc_round(uint64_t c, const unsigned char *p, const int lanes) {
    uint64_t chain[4] = {c, 0, 0, 0};
    for (size_t i = 0; i < CRC_LANE; i += 8) {
#pragma clang loop unroll(full)
        for (int l = 0; l < lanes; l++) {
            uint64_t w;
            memcpy(&w, p + (size_t)l * CRC_LANE + i, 8);
            chain[l] = __builtin_ia32_crc32di(chain[l], w);
        }
    }
    /* state(A||B||...) = shift(...shift(shift(a) ^ b)...) ^ last, each shift over the lane length. */
    uint32_t s = (uint32_t)chain[0];
#pragma clang loop unroll(full)
    for (int l = 1; l < lanes; l++) s = crc_multmodp(crc_lane_shift, s) ^ (uint32_t)chain[l];
    return s;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    uint64_t c = ~crc;
    for (; length >= 4 * CRC_LANE; p += 4 * CRC_LANE, length -= 4 * CRC_LANE) c = crc_round(c, p, 4);
    if (length >= 3 * CRC_LANE) {
        c = crc_round(c, p, 3);
        p += 3 * CRC_LANE;
        length -= 3 * CRC_LANE;
    }
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (length--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

uint32_t lg_crc32c(uint32_t crc, const void *data, size_t length) {
#if defined(__x86_64__)
    static int have_sse42 = -1;  /* -1 unknown; racing first callers compute the same values */
    int have = __atomic_load_n(&have_sse42, __ATOMIC_ACQUIRE);
    if (have < 0) {
        __atomic_store_n(&crc_lane_shift, crc_x8nmodp(CRC_LANE), __ATOMIC_RELAXED);
        have = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        __atomic_store_n(&have_sse42, have, __ATOMIC_RELEASE);
    }
    if (have) return crc32c_sse42(crc, data, length);
#endif
    return lg_crc32c_portable(crc, data, length);
}
