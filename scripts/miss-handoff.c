/*
 * What it costs an event loop to serve a read that must wait for the disk,
 * measured apart from layergated: the loop's part of a cold GetPage.
 *
 * A server thread (or LOOPS of them, below) runs an epoll loop over C
 * Unix-socket connections. Each request (8 bytes) asks for a random 8 KiB
 * block of FILE (read O_DIRECT: one image of a version-2 layer file); the
 * answer is those 8 KiB.
 * One client thread drives every connection from its own epoll set, one
 * request in flight per connection, and times each. Ways to serve a miss:
 *
 *   threads  the loop queues the read for a pool of threads (mutex and
 *            condition variable); a thread preads, queues the result and
 *            writes an eventfd the loop watches (what layergated does: two
 *            hand-offs, two wake-ups)
 *   uring    the loop submits the read to an io_uring whose completions
 *            signal an eventfd in the loop's epoll set (no thread; one wake-up)
 *   conn     no loop: a thread per connection takes its request, preads and
 *            sends the answer itself (blocking calls; one wake-up for the
 *            read, as raw, and one for each request)
 *   raw      no server: C threads, each one pread at a time (the disk alone)
 *
 * usage: miss-handoff FILE threads|uring|conn|raw [CLIENTS [SECONDS]]
 * Knobs of the uring server, from the environment, to see what moves the tail:
 *   SPIN_NS=N  the loop spins N ns before each submission and each answer:
 *              a stand-in for the work a real server does per request
 *   LOOPS=N    N server loops, each with its own epoll set and ring, the
 *              connections split among them
 *   BATCH=1    a pass's reads are submitted together, in one io_uring_enter
 *              before the loop sleeps, not one system call each
 *   FIXED=1    the buffers and the file are registered with the ring
 *              (IORING_OP_READ_FIXED, IOSQE_FIXED_FILE): no page pinning
 *              and no file lookup per read; FIXED=2 the buffers only
 *   ASYNC=1    each read is punted to io_uring's own workers (IOSQE_ASYNC):
 *              the loop no longer issues it to the block layer itself
 * Knobs of every server (POLL: of the loops, threads and uring):
 *   POLL=1     the loop polls (epoll_wait with no timeout) and never sleeps
 *   RT=1       the server's threads run SCHED_FIFO, so the client thread
 *              never delays them on a shared CPU (root)
 *   PIN=C      the server's threads run on CPU C, the client on another
 * Prints ops/s and p50/p99/p99.9 of one request in µs. Run it on the data
 * disk (scripts/bench-cold.sh's layer files will do):
 *   cc -O2 -pthread scripts/miss-handoff.c -o /tmp/miss-handoff
 *   for m in raw threads uring; do /tmp/miss-handoff LAYER_FILE $m 8 5; done
 * with LAYER_FILE the largest file in .layergate/bench-cold/data/tenants/ID/.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { BLOCK = 8192, MAX_CLIENTS = 64, MAX_LOOPS = 8, MAX_SAMPLES = 4 << 20 };

static int file_fd, clients = 8;
static uint64_t file_blocks;
static double seconds = 8;
static uint64_t *samples;
static size_t sample_count;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* --- the server's connections ------------------------------------------ */

typedef struct conn {
    int fd;
    unsigned char *buf;  /* the block read for the request in flight (aligned) */
} conn;

static conn conns[MAX_CLIENTS];

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("send");
        c += w, n -= (size_t)w;
    }
}

/* Takes one request from connection i: the block number, or -1 when it closed. */
static int64_t take_request(int i) {
    uint64_t block;
    ssize_t r = recv(conns[i].fd, &block, sizeof block, MSG_WAITALL);
    return r == (ssize_t)sizeof block ? (int64_t)block : -1;
}

/* --- hand-off to threads ------------------------------------------------ */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static int work[MAX_CLIENTS], work_n, done[MAX_CLIENTS], done_n;
static uint64_t work_block[MAX_CLIENTS];
static int done_fd;

static void maybe_realtime(void);

static void *reader(void *arg) {
    (void)arg;
    maybe_realtime();
    for (;;) {
        pthread_mutex_lock(&lock);
        while (work_n == 0) pthread_cond_wait(&work_ready, &lock);
        int i = work[--work_n];
        pthread_mutex_unlock(&lock);
        if (pread(file_fd, conns[i].buf, BLOCK, (off_t)(work_block[i] * BLOCK)) != BLOCK) die("pread");
        pthread_mutex_lock(&lock);
        done[done_n++] = i;
        pthread_mutex_unlock(&lock);
        uint64_t one = 1;
        if (write(done_fd, &one, sizeof one) != sizeof one) die("eventfd write");
    }
    return NULL;
}

/* --- io_uring, with the raw system calls: a ring per server loop --------- */

static __thread int ring_fd;
static __thread unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static __thread struct io_uring_sqe *sqes;
static __thread struct io_uring_cqe *cqes;
static __thread unsigned unsubmitted;
static int batch_submit, fixed_io, async_issue;

static void ring_setup(int eventfd) {
    struct io_uring_params p = {0};
    ring_fd = (int)syscall(__NR_io_uring_setup, 64, &p);
    if (ring_fd < 0) die("io_uring_setup");
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t size = sq_size > cq_size ? sq_size : cq_size;  /* IORING_FEAT_SINGLE_MMAP: one map for both rings */
    char *rings = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
    sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                ring_fd, IORING_OFF_SQES);
    if (rings == MAP_FAILED || sqes == MAP_FAILED) die("mmap io_uring");
    sq_tail = (unsigned *)(rings + p.sq_off.tail);
    sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
    sq_array = (unsigned *)(rings + p.sq_off.array);
    cq_head = (unsigned *)(rings + p.cq_off.head);
    cq_tail = (unsigned *)(rings + p.cq_off.tail);
    cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
    if (syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_EVENTFD, &eventfd, 1) != 0) die("io_uring_register");
    if (fixed_io) {
        struct iovec v[MAX_CLIENTS];
        for (int i = 0; i < clients; i++) v[i] = (struct iovec){.iov_base = conns[i].buf, .iov_len = BLOCK};
        if (syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_BUFFERS, v, clients) != 0) die("register buffers");
        if (fixed_io == 1 && syscall(__NR_io_uring_register, ring_fd, IORING_REGISTER_FILES, &file_fd, 1) != 0) die("register files");
    }
}

static void ring_read(int i, uint64_t block) {
    unsigned tail = *sq_tail, index = tail & *sq_mask;
    struct io_uring_sqe *e = &sqes[index];
    memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_READ;
    e->fd = file_fd;
    if (fixed_io) {
        e->opcode = IORING_OP_READ_FIXED;
        e->buf_index = (uint16_t)i;
        if (fixed_io == 1) {
            e->fd = 0;
            e->flags = IOSQE_FIXED_FILE;
        }
    }
    e->addr = (uint64_t)(uintptr_t)conns[i].buf;
    e->len = BLOCK;
    e->off = block * BLOCK;
    e->user_data = (uint64_t)i;
    if (async_issue) e->flags |= IOSQE_ASYNC;
    sq_array[index] = index;
    atomic_store_explicit((_Atomic unsigned *)sq_tail, tail + 1, memory_order_release);
    if (batch_submit) unsubmitted++;
    else if (syscall(__NR_io_uring_enter, ring_fd, 1, 0, 0, NULL, 0) != 1) die("io_uring_enter");
}

static void ring_submit_batch(void) {
    if (unsubmitted == 0) return;
    if (syscall(__NR_io_uring_enter, ring_fd, unsubmitted, 0, 0, NULL, 0) != (long)unsubmitted) die("io_uring_enter");
    unsubmitted = 0;
}

/* --- the server loop ---------------------------------------------------- */

static int use_ring, loops = 1, poll_only;
static uint64_t spin_ns;

static void spin(void) {
    if (spin_ns == 0) return;
    uint64_t t = now_ns();
    while (now_ns() - t < spin_ns) {}
}

/* Server loop `arg` of `loops`: serves connections i with i % loops == arg. */
static void *server(void *arg) {
    int me = (int)(uintptr_t)arg;
    maybe_realtime();
    int ep = epoll_create1(0);
    int loop_done_fd = eventfd(0, EFD_NONBLOCK);
    if (use_ring) {
        ring_setup(loop_done_fd);
    } else {
        done_fd = loop_done_fd;  /* threads: one loop, so one eventfd */
        for (int t = 0; t < clients; t++) {
            pthread_t th;
            pthread_create(&th, NULL, reader, NULL);
        }
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = MAX_CLIENTS};
    epoll_ctl(ep, EPOLL_CTL_ADD, loop_done_fd, &ev);
    int open = 0;
    for (int i = me; i < clients; i += loops) {
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
        open++;
    }
    struct epoll_event events[MAX_CLIENTS + 1];
    while (open > 0) {
        if (use_ring) ring_submit_batch();
        int n = epoll_wait(ep, events, MAX_CLIENTS + 1, poll_only ? 0 : -1);
        for (int k = 0; k < n; k++) {
            uint32_t who = events[k].data.u32;
            if (who == MAX_CLIENTS) {
                uint64_t count;
                if (read(loop_done_fd, &count, sizeof count) < 0 && errno != EAGAIN) die("eventfd read");
                if (use_ring) {
                    unsigned head = *cq_head;
                    while (head != atomic_load_explicit((_Atomic unsigned *)cq_tail, memory_order_acquire)) {
                        struct io_uring_cqe *c = &cqes[head & *cq_mask];
                        if (c->res != BLOCK) { fprintf(stderr, "read: %d\n", c->res); exit(1); }
                        int i = (int)c->user_data;
                        head++;
                        spin();
                        send_all(conns[i].fd, conns[i].buf, BLOCK);
                    }
                    atomic_store_explicit((_Atomic unsigned *)cq_head, head, memory_order_release);
                } else {
                    int ready[MAX_CLIENTS], m;
                    pthread_mutex_lock(&lock);
                    m = done_n;
                    memcpy(ready, done, sizeof(int) * (size_t)m);
                    done_n = 0;
                    pthread_mutex_unlock(&lock);
                    for (int j = 0; j < m; j++) send_all(conns[ready[j]].fd, conns[ready[j]].buf, BLOCK);
                }
                continue;
            }
            int64_t block = take_request((int)who);
            if (block < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, conns[who].fd, NULL);
                open--;
                continue;
            }
            if (use_ring) {
                spin();
                ring_read((int)who, (uint64_t)block);
            } else {
                pthread_mutex_lock(&lock);
                work_block[who] = (uint64_t)block;
                work[work_n++] = (int)who;
                pthread_cond_signal(&work_ready);
                pthread_mutex_unlock(&lock);
            }
        }
    }
    return NULL;
}

/* --- a thread per connection ------------------------------------------ */

static void *conn_server(void *arg) {
    int i = (int)(uintptr_t)arg;
    maybe_realtime();
    for (;;) {
        int64_t block = take_request(i);
        if (block < 0) return NULL;
        if (pread(file_fd, conns[i].buf, BLOCK, (off_t)((uint64_t)block * BLOCK)) != BLOCK) die("pread");
        send_all(conns[i].fd, conns[i].buf, BLOCK);
    }
}

static int realtime;

/* RT=1: the calling server thread preempts the client thread. */
static int pin_server = -1;

static void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (e != 0) { errno = e; die("pthread_setaffinity_np"); }
}

static void maybe_realtime(void) {
    if (pin_server >= 0) pin_to(pin_server);
    if (!realtime) return;
    struct sched_param sp = {.sched_priority = 1};
    int e = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    if (e != 0) { errno = e; die("SCHED_FIFO"); }
}

/* --- the client: one epoll thread, one request in flight per connection -- */

static void run_clients(int fds[]) {
    int ep = epoll_create1(0);
    uint64_t x[MAX_CLIENTS], sent_at[MAX_CLIENTS];
    size_t got[MAX_CLIENTS] = {0};
    static unsigned char sink[BLOCK];
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < clients; i++) {
        x[i] = 88172645463325252ull ^ ((uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    int running = clients;
    for (int i = 0; i < clients; i++) {
        x[i] ^= x[i] << 13, x[i] ^= x[i] >> 7, x[i] ^= x[i] << 17;
        uint64_t b = x[i] % file_blocks;
        sent_at[i] = now_ns();
        send_all(fds[i], &b, sizeof b);
    }
    struct epoll_event events[MAX_CLIENTS];
    while (running > 0) {
        int n = epoll_wait(ep, events, MAX_CLIENTS, -1);
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            ssize_t r = recv(fds[i], sink, BLOCK - got[i], MSG_DONTWAIT);
            if (r <= 0) continue;
            got[i] += (size_t)r;
            if (got[i] < BLOCK) continue;
            got[i] = 0;
            uint64_t t = now_ns();
            if (sample_count < MAX_SAMPLES) samples[sample_count++] = t - sent_at[i];
            if (t >= deadline) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                shutdown(fds[i], SHUT_WR);
                running--;
                continue;
            }
            x[i] ^= x[i] << 13, x[i] ^= x[i] >> 7, x[i] ^= x[i] << 17;
            uint64_t b = x[i] % file_blocks;
            sent_at[i] = t;
            send_all(fds[i], &b, sizeof b);
        }
    }
}

/* --- raw: the disk alone ----------------------------------------------- */

static _Atomic size_t raw_next;

static void *raw_thread(void *arg) {
    uint64_t x = 0x2545F4914F6CDD1Dull ^ (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull;
    void *buf;
    if (posix_memalign(&buf, 4096, BLOCK) != 0) die("posix_memalign");
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    for (;;) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t t0 = now_ns();
        if (pread(file_fd, buf, BLOCK, (off_t)((x % file_blocks) * BLOCK)) != BLOCK) die("pread");
        uint64_t t1 = now_ns();
        size_t at = atomic_fetch_add(&raw_next, 1);
        if (at < MAX_SAMPLES) samples[at] = t1 - t0;
        if (t1 >= deadline) break;
    }
    free(buf);
    return NULL;
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: miss-handoff FILE threads|uring|conn|raw [CLIENTS [SECONDS]]\n");
        return 2;
    }
    const char *mode = argv[2];
    if (argc > 3) clients = atoi(argv[3]);
    if (argc > 4) seconds = atof(argv[4]);
    if (clients < 1 || clients > MAX_CLIENTS) return 2;
    file_fd = open(argv[1], O_RDONLY | O_DIRECT);
    struct stat st;
    if (file_fd < 0 || fstat(file_fd, &st) != 0) die(argv[1]);
    file_blocks = (uint64_t)st.st_size / BLOCK;
    if (file_blocks == 0) return 2;
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    uint64_t start = now_ns();
    if (strcmp(mode, "raw") == 0) {
        pthread_t t[MAX_CLIENTS];
        for (int i = 0; i < clients; i++) pthread_create(&t[i], NULL, raw_thread, (void *)(uintptr_t)(i + 1));
        for (int i = 0; i < clients; i++) pthread_join(t[i], NULL);
        sample_count = atomic_load(&raw_next) < MAX_SAMPLES ? atomic_load(&raw_next) : MAX_SAMPLES;
    } else {
        use_ring = strcmp(mode, "uring") == 0;
        int per_conn = strcmp(mode, "conn") == 0;
        if (!use_ring && !per_conn && strcmp(mode, "threads") != 0) return 2;
        int client_fds[MAX_CLIENTS];
        for (int i = 0; i < clients; i++) {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
            conns[i].fd = sv[0];
            client_fds[i] = sv[1];
            if (posix_memalign((void **)&conns[i].buf, 4096, BLOCK) != 0) die("posix_memalign");
        }
        const char *e;
        async_issue = getenv("ASYNC") != NULL && strcmp(getenv("ASYNC"), "1") == 0;
        poll_only = getenv("POLL") != NULL && strcmp(getenv("POLL"), "1") == 0;
        if ((e = getenv("PIN")) != NULL) {
            char *end;
            pin_server = (int)strtol(e, &end, 10);
            if (*e == '\0' || *end != '\0' || pin_server < 0) pin_server = 1 << 20;  /* refused below */
        }
        realtime = getenv("RT") != NULL && strcmp(getenv("RT"), "1") == 0;
        if ((e = getenv("SPIN_NS")) != NULL) spin_ns = strtoull(e, NULL, 10);
        if ((e = getenv("LOOPS")) != NULL) loops = atoi(e);
        batch_submit = getenv("BATCH") != NULL && strcmp(getenv("BATCH"), "1") == 0;
        if ((e = getenv("FIXED")) != NULL) {
            char *end;
            fixed_io = (int)strtol(e, &end, 10);
            if (*e == '\0' || *end != '\0') fixed_io = -1;
        }
        if (fixed_io < 0 || fixed_io > 2 || (fixed_io > 0 && !use_ring)) {
            fprintf(stderr, "FIXED: 0, 1 or 2, and 1 or 2 with uring only\n");
            return 2;
        }
        if (loops < 1 || loops > MAX_LOOPS || (loops > 1 && !use_ring)) {
            fprintf(stderr, "LOOPS: 1 to %d, and more than 1 with uring only\n", MAX_LOOPS);
            return 2;
        }
        if (per_conn && (loops > 1 || batch_submit || fixed_io || spin_ns || poll_only)) {
            fprintf(stderr, "conn: no LOOPS, BATCH, FIXED, SPIN_NS or POLL\n");
            return 2;
        }
        if (async_issue && !use_ring) {
            fprintf(stderr, "ASYNC: with uring only\n");
            return 2;
        }
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (pin_server >= cpus || (pin_server >= 0 && cpus < 2)) {
            fprintf(stderr, "PIN: a CPU from 0 to %ld, and two CPUs at least\n", cpus - 1);
            return 2;
        }
        pthread_t s[MAX_CLIENTS];
        int threads = per_conn ? clients : loops;
        for (int l = 0; l < threads; l++)
            pthread_create(&s[l], NULL, per_conn ? conn_server : server, (void *)(uintptr_t)l);
        if (pin_server >= 0) pin_to(pin_server == 0 ? 1 : 0);  /* the client: any other CPU */
        run_clients(client_fds);
        for (int l = 0; l < threads; l++) pthread_join(s[l], NULL);
    }
    double secs = (double)(now_ns() - start) / 1e9;
    qsort(samples, sample_count, sizeof *samples, by_value);
    printf("%-8s %d clients: %.0f ops/s, p50 %.0f us, p99 %.0f us, p99.9 %.0f us (%zu reads of 8 KiB, O_DIRECT)\n", mode,
           clients, (double)sample_count / secs, samples[sample_count / 2] / 1e3, samples[sample_count * 99 / 100] / 1e3,
           samples[sample_count * 999 / 1000] / 1e3, sample_count);
    return 0;
}
