#define _GNU_SOURCE
#include "CSystemShims.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif

struct lg_uring {
    int fd;
    void *rings;
    size_t rings_size;
    struct io_uring_sqe *sqes;
    size_t sqes_size;
    unsigned sq_entries;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
};

lg_uring *lg_uring_open(unsigned entries, int eventfd) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    /* SUBMIT_ALL (5.18): an entry the kernel refuses (its completion says why)
       does not leave the ones queued after it unsubmitted. */
    p.flags = IORING_SETUP_SUBMIT_ALL;
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0 && errno == EINVAL) {
        memset(&p, 0, sizeof p);
        fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    }
    if (fd < 0) return NULL;
    /* Kernels before 5.4 map the rings apart; they are not served (errno ENOSYS: use threads). */
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        close(fd);
        errno = ENOSYS;
        return NULL;
    }
    lg_uring *r = calloc(1, sizeof *r);
    if (r == NULL) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    r->fd = fd;
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->rings_size = sq_size > cq_size ? sq_size : cq_size;
    r->rings = mmap(NULL, r->rings_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->rings == MAP_FAILED || r->sqes == MAP_FAILED) {
        int saved = errno;
        if (r->rings != MAP_FAILED) munmap(r->rings, r->rings_size);
        if (r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_size);
        close(fd);
        free(r);
        errno = saved;
        return NULL;
    }
    char *base = r->rings;
    r->sq_entries = p.sq_entries;
    r->sq_head = (unsigned *)(base + p.sq_off.head);
    r->sq_tail = (unsigned *)(base + p.sq_off.tail);
    r->sq_mask = (unsigned *)(base + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(base + p.sq_off.array);
    r->cq_head = (unsigned *)(base + p.cq_off.head);
    r->cq_tail = (unsigned *)(base + p.cq_off.tail);
    r->cq_mask = (unsigned *)(base + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);
    if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_EVENTFD, &eventfd, 1) != 0) {
        int saved = errno;
        lg_uring_close(r);
        errno = saved;
        return NULL;
    }
    return r;
}

int lg_uring_queue_read(lg_uring *r, int fd, void *buffer, uint32_t length, uint64_t offset, uint64_t tag) {
    /* One thread queues and submits: only the kernel moves the head, and only inside lg_uring_submit. */
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE), tail = *r->sq_tail;
    if (tail - head >= r->sq_entries) return -EBUSY;
    unsigned index = tail & *r->sq_mask;
    struct io_uring_sqe *e = &r->sqes[index];
    memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_READ;
    e->fd = fd;
    e->addr = (uint64_t)(uintptr_t)buffer;
    e->len = length;
    e->off = offset;
    e->user_data = tag;
    r->sq_array[index] = index;
    __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
    return 0;
}

int lg_uring_submit(lg_uring *r) {
    for (;;) {
        unsigned queued = *r->sq_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
        if (queued == 0) return 0;
        long n = syscall(__NR_io_uring_enter, r->fd, queued, 0, 0, NULL, 0);
        if (n < 0 && errno == EINTR) continue;
        int result = n < 0 ? -errno : (int)n;
        /* What the kernel did not take (EAGAIN, EBUSY, ENOMEM) is taken back: the ring holds nothing between calls. */
        __atomic_store_n(r->sq_tail, __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
        return result;
    }
}

unsigned lg_uring_reap(lg_uring *r, uint64_t *tags, int32_t *results, unsigned max) {
    unsigned head = *r->cq_head, taken = 0;
    unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    while (head != tail && taken < max) {
        struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
        tags[taken] = c->user_data;
        results[taken] = c->res;
        taken++;
        head++;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return taken;
}

int lg_uring_wait(lg_uring *r, unsigned count) {
    for (;;) {
        unsigned ready = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
        if (ready >= count) return 0;
        long n = syscall(__NR_io_uring_enter, r->fd, 0, count - ready, IORING_ENTER_GETEVENTS, NULL, 0);
        if (n < 0 && errno != EINTR) return -errno;
    }
}

void lg_uring_close(lg_uring *r) {
    munmap(r->sqes, r->sqes_size);
    munmap(r->rings, r->rings_size);
    close(r->fd);
    free(r);
}
