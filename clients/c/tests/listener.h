/* A Unix-socket listener in its own temp dir, for tests that play the server's part (or refuse to). */
#ifndef LG_TEST_LISTENER_H
#define LG_TEST_LISTENER_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct test_listener {
    char dir[64];
    char path[128];
    int fd;
} test_listener;

/* Binds and listens (backlog as given; it never accepts by itself). False, with a message, on failure. */
static inline bool listener_open(test_listener *l, int backlog) {
    snprintf(l->dir, sizeof l->dir, "/tmp/lgc-listener-XXXXXX");
    l->fd = -1;
    if (mkdtemp(l->dir) == NULL) { perror("mkdtemp"); l->dir[0] = '\0'; return false; }
    snprintf(l->path, sizeof l->path, "%s/s.sock", l->dir);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, l->path, strlen(l->path) + 1);
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(l->fd, backlog) < 0) {
        perror("listen");
        return false;
    }
    return true;
}

/* Closes the socket and removes it and its dir, whatever listener_open got to. */
static inline void listener_close(test_listener *l) {
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
    if (l->dir[0] == '\0') return;
    unlink(l->path);
    rmdir(l->dir);
    l->dir[0] = '\0';
}

#endif
