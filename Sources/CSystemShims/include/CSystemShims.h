#ifndef LAYERGATE_CSYSTEMSHIMS_H
#define LAYERGATE_CSYSTEMSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <sys/eventfd.h>

/// renameat2(olddirfd, oldpath, newdirfd, newpath, RENAME_NOREPLACE).
/// Returns 0 or -1 with errno set (EEXIST when the new name is taken,
/// EINVAL/ENOSYS where the filesystem or kernel lacks the flag).
int lg_rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);

/// What SO_PEERCRED answers for a connected Unix socket: glibc's `struct
/// ucred`, which it declares only under _GNU_SOURCE (out of Swift's reach).
typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} lg_peer_credentials;

/// The SO_PEERCRED option number, for getsockopt at SOL_SOCKET.
int lg_so_peercred(void);

/* Names the calling thread (at most 15 bytes are kept), as ps and perf show it. */
void lg_name_thread(const char *name);

/// accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC): a connection ready
/// for an epoll loop, not inherited by a child (accept4 needs _GNU_SOURCE).
int lg_accept_nonblocking(int fd);

/// The O_DIRECT open flag (fcntl F_SETFL takes it too), which glibc declares only under _GNU_SOURCE.
int lg_o_direct(void);
/// pread that never waits for the disk (preadv2 with RWF_NOWAIT): -1 with
/// EAGAIN when the range is not all in the OS page cache (its read is then started).
ssize_t lg_pread_nowait(int fd, void *buf, size_t count, off_t offset);

/// How many of the file's pages the OS page cache holds (mincore over a
/// mapping, which reads nothing and starts no read-ahead); -1 on error.
long lg_resident_pages(int fd);

/// malloc_trim(0): gives the heap's free pages back to the system (glibc).
void lg_release_free_heap(void);

/// CRC-32C (Castagnoli), continuing from `crc` (start with 0).
/// Uses the SSE4.2 instruction when the CPU has it, a table otherwise.
uint32_t lg_crc32c(uint32_t crc, const void *data, size_t length);

/// CRC-32C of `a` followed by `b`, from the CRC of each and the length of `b`
/// (as zlib's crc32_combine). Exposed so tests can check the shift arithmetic.
uint32_t lg_crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t length_b);

/// The table implementation, exposed so tests can check both agree.
uint32_t lg_crc32c_portable(uint32_t crc, const void *data, size_t length);

/// An io_uring used for reads only, by one thread (the event loop), with
/// the raw system calls (no liburing on the build machines). Completions
/// signal `eventfd`, which the loop watches with the rest of its epoll set.
typedef struct lg_uring lg_uring;

/// A ring of `entries` submissions (completions: twice that). NULL with errno
/// set where the kernel has no io_uring, or forbids it (io_uring_disabled, seccomp).
lg_uring *lg_uring_open(unsigned entries, int eventfd);

/// Queues one read of `length` bytes at `offset` of `fd` into `buffer`,
/// tagged `tag`, for the next lg_uring_submit. Returns 0, or -EBUSY when the
/// submission ring is full. `fd` must stay open until lg_uring_submit returns:
/// the kernel takes hold of the file when it takes the read.
int lg_uring_queue_read(lg_uring *ring, int fd, void *buffer, uint32_t length, uint64_t offset, uint64_t tag);

/// Hands every queued read to the kernel in one system call; a disk then
/// hears of them in one notification, where each read entered on its own
/// costs one (a VM exit on these machines). Returns how many the kernel
/// took, the first ones queued, or -errno when it took none; the others are
/// dropped from the ring (their tags never complete).
int lg_uring_submit(lg_uring *ring);

/// Takes up to `max` completions: each read's tag, and its result (bytes
/// read, or -errno). Returns how many it took.
unsigned lg_uring_reap(lg_uring *ring, uint64_t *tags, int32_t *results, unsigned max);

/// Waits until at least `count` completions are ready to reap (0, or -errno).
int lg_uring_wait(lg_uring *ring, unsigned count);

/// Unmaps and closes the ring. Reads still in flight must be reaped first.
void lg_uring_close(lg_uring *ring);

#endif
