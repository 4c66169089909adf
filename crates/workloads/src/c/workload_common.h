/* Shared helpers for the C workloads. Header-only: everything is static so
 * the only global symbols of a workload are its chain functions and main. */
#ifndef WORKLOAD_COMMON_H
#define WORKLOAD_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Every function of an expected call chain carries CHAIN_FN:
 *  - noinline: the function keeps its own frame;
 *  - noipa: no cloning (no `.constprop.0`/`.isra.0` names), no identical-code
 *    folding with a look-alike function, no interprocedural assumptions.
 * Tail calls are prevented separately, at each call site, by using the
 * callee's result after the call (a store to `workload_sink`). */
#define CHAIN_FN __attribute__((noinline, noipa))

/* Sink that the optimizer cannot remove stores to. */
static volatile uint64_t workload_sink;

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of the calling process: a budget in CPU time is the same number
 * of samples however busy the machine is. */
static inline uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* argv[1]: run time in milliseconds; absent or 0 means "until killed".
 * Returns the deadline in now_ns() time, or 0 for none. */
static inline uint64_t deadline_from_args(int argc, char **argv) {
    if (argc < 2)
        return 0;
    uint64_t ms = strtoull(argv[1], NULL, 10);
    return ms == 0 ? 0 : now_ns() + ms * 1000000ull;
}

static inline int expired(uint64_t deadline) {
    return deadline != 0 && now_ns() >= deadline;
}

static inline void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000l};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

#endif
