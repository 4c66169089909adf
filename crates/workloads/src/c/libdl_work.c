/* libdl_work.so: loaded late by dlopen_late through dlopen(3).
 *     dl_work_outer -> dl_work_leaf   (dl_work_leaf spins)
 * Built with: gcc -O2 -fomit-frame-pointer -g -fPIC -shared
 * dl_work_outer is exported (looked up with dlsym); dl_work_leaf is hidden so
 * the call is direct rather than through the PLT. */
#include <stdint.h>

#define CHAIN_FN __attribute__((noinline, noipa))

static volatile uint64_t dl_sink;

__attribute__((visibility("hidden"))) CHAIN_FN uint64_t dl_work_leaf(uint64_t iters) {
    uint64_t x = iters | 5;
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

CHAIN_FN uint64_t dl_work_outer(uint64_t iters) {
    uint64_t r = dl_work_leaf(iters);
    dl_sink = r; /* use of the result: no tail call */
    return r + 1;
}
