/* The C tests' assertions (a failed CHECK prints where and why, counts, and the test goes on), clock and runner. */
#ifndef LG_TEST_CHECK_H
#define LG_TEST_CHECK_H

#include <stdio.h>
#include <time.h>

static int failures, checks;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        checks++;                                                         \
        if (!(cond)) {                                                    \
            failures++;                                                   \
            printf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
        }                                                                 \
    } while (0)

/* Seconds on the monotonic clock, for bounds on how long a call took. */
static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs each test, printing "ok" or "FAIL" and its name, then a summary line; returns the exit status. */
typedef struct named_test {
    const char *name;
    void (*run)(void);
} named_test;

static inline int run_tests(const char *program, const named_test *tests, size_t count) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < count; i++) {
        int before = failures;
        tests[i].run();
        printf("%s %s\n", failures == before ? "ok  " : "FAIL", tests[i].name);
    }
    printf("%s: %d checks, %d failures\n", program, checks, failures);
    return failures ? 1 : 0;
}

#endif
