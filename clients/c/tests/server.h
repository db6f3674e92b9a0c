/* A real layergated for the tests: its own temp dir, socket and data dir. */
#ifndef LG_TEST_SERVER_H
#define LG_TEST_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct test_server {
    pid_t pid;          /* 0 when not running */
    char dir[256];      /* removed by server_cleanup */
    char socket[300];
    char data[300];
} test_server;

/* Starts $LAYERGATED in a new temp dir (or, if dir is already set, on the same data dir) and waits until it accepts. */
bool server_start(test_server *s);
/* Sends sig and waits for the process; returns its wait status. */
int server_signal(test_server *s, int sig);
/* Waits for a server that is exiting by itself (e.g. a failpoint `exit`); returns its wait status. */
int server_wait(test_server *s);
/* Kills the server if running and removes its temp dir. */
void server_cleanup(test_server *s);

#endif
