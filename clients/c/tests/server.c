#define _GNU_SOURCE
#include "server.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool accepts(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) { close(fd); return false; }
    memcpy(a.sun_path, path, strlen(path) + 1);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

bool server_start(test_server *s) {
    if (s->dir[0] == '\0') {
        snprintf(s->dir, sizeof s->dir, "/tmp/lgc-test-XXXXXX");
        if (mkdtemp(s->dir) == NULL) { perror("mkdtemp"); s->dir[0] = '\0'; return false; }
        snprintf(s->socket, sizeof s->socket, "%s/lg.sock", s->dir);
        snprintf(s->data, sizeof s->data, "%s/data", s->dir);
    }
    const char *bin = getenv("LAYERGATED");
    if (bin == NULL) { fprintf(stderr, "LAYERGATED is not set (the layergated binary to test against)\n"); return false; }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return false; }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);  /* a crashed test leaves no server behind */
        if (getppid() != parent) _exit(127);
        execl(bin, bin, "--socket", s->socket, "--data-dir", s->data, "--enable-failpoints", "--log-level", "error",
              "--compaction-period-s", "3600", "--page-cache-mib", "64", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    /* Ready when it accepts; a server that exits early is reported at once. */
    for (int i = 0; i < 3000; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "layergated exited during startup (status %#x)\n", status);
            s->pid = 0;
            return false;
        }
        if (accepts(s->socket)) return true;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    fprintf(stderr, "layergated did not accept on %s within 30 s\n", s->socket);
    return false;
}

int server_signal(test_server *s, int sig) {
    if (s->pid == 0) return -1;
    kill(s->pid, sig);
    return server_wait(s);
}

int server_wait(test_server *s) {
    if (s->pid == 0) return -1;
    int status = -1;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR) {}
    s->pid = 0;
    return status;
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void server_cleanup(test_server *s) {
    if (s->pid != 0) server_signal(s, SIGKILL);
    if (s->dir[0] != '\0') nftw(s->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    s->dir[0] = '\0';
}
