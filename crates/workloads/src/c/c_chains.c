/* c_chains: two CPU-bound call chains, run alternately for about the same
 * time each:
 *     main -> chain_a -> chain_b -> chain_c   (chain_c spins)
 *     main -> chain_x -> chain_y              (chain_y spins)
 * Built with: gcc -O2 -fomit-frame-pointer -g
 * Usage: c_chains [duration_ms]   (0 or absent: run until killed) */
#include "workload_common.h"

/* Iterations of one leaf call: a few milliseconds. */
#define SLICE_ITERS 2000000ull

CHAIN_FN uint64_t chain_c(uint64_t iters) {
    uint64_t x = iters | 1;
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

CHAIN_FN uint64_t chain_b(uint64_t iters) {
    uint64_t r = chain_c(iters);
    workload_sink = r; /* use of the result: no tail call */
    return r + 2;
}

CHAIN_FN uint64_t chain_a(uint64_t iters) {
    uint64_t r = chain_b(iters);
    workload_sink = r;
    return r + 1;
}

CHAIN_FN uint64_t chain_y(uint64_t iters) {
    uint64_t x = iters | 3;
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x ^ 0x5555;
}

CHAIN_FN uint64_t chain_x(uint64_t iters) {
    uint64_t r = chain_y(iters);
    workload_sink = r;
    return r + 3;
}

int main(int argc, char **argv) {
    uint64_t deadline = deadline_from_args(argc, argv);
    uint64_t acc = 0;
    do {
        acc += chain_a(SLICE_ITERS);
        acc += chain_x(SLICE_ITERS);
        workload_sink = acc;
    } while (!expired(deadline));
    return 0;
}
