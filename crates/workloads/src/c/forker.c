/* forker: forks short-lived children, one at a time. Each child burns CPU
 * for CHILD_MS in
 *     main -> child_work -> child_leaf   (child_leaf spins)
 * then _exit()s; the parent waits for it, sleeps GAP_MS and forks the next.
 * Children are processes of the same executable, so their comm is the exe
 * name ("forker").
 * Built with: gcc -O2 -fomit-frame-pointer -g -Wl,-z,now
 *   (-z now: a child must not spend its first samples in the lazy PLT
 *   resolver, e.g. for _exit, which the parent never called.)
 * Usage: forker [duration_ms [child_ms [gap_ms]]]   (0 or absent: until killed)
 *   defaults: child_ms 100, gap_ms 20, i.e. about 8 children a second: long
 *   enough that fork and exit (which are not in the chain) stay well under 1%
 *   of the samples. */
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "workload_common.h"

/* Iterations of one leaf call: about a millisecond, so the child's run time
 * is close to child_ms, and the CPU clock read between two calls (a
 * syscall, slow in a VM) stays well under 1 % of the child's samples. */
#define SLICE_ITERS 1000000ull

CHAIN_FN uint64_t child_leaf(uint64_t iters) {
    uint64_t x = iters | 7;
    for (uint64_t i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

/* Burns `ms` of CPU time (not wall time: on a loaded machine a wall-clock
 * budget would shrink the chain's share against the fixed cost of fork and
 * exit). */
CHAIN_FN uint64_t child_work(uint64_t ms) {
    uint64_t end = cpu_ns() + ms * 1000000ull;
    uint64_t acc = 0;
    do {
        acc += child_leaf(SLICE_ITERS); /* result used: no tail call */
        workload_sink = acc;
    } while (cpu_ns() < end);
    return acc;
}

int main(int argc, char **argv) {
    uint64_t deadline = deadline_from_args(argc, argv);
    uint64_t child_ms = argc >= 3 ? strtoull(argv[2], NULL, 10) : 100;
    uint64_t gap_ms = argc >= 4 ? strtoull(argv[3], NULL, 10) : 20;
    do {
        pid_t pid = fork();
        if (pid < 0) {
            perror("forker: fork");
            return 2;
        }
        if (pid == 0) {
            workload_sink = child_work(child_ms);
            _exit(0);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0) {
        }
        if (gap_ms)
            sleep_ms(gap_ms);
    } while (!expired(deadline));
    return 0;
}
