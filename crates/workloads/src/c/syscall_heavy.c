/* syscall_heavy: many cheap system calls in a loop, so most samples land in
 * the kernel with the user frames
 *     main -> sys_outer -> sys_loop   (-> libc syscall() -> kernel)
 * below them. sys_loop alternates getppid(2) and a 256-byte read(2) of
 * /dev/zero, both through syscall(3).
 * Built with: gcc -O2 -fomit-frame-pointer -g
 * Usage: syscall_heavy [duration_ms]   (0 or absent: run until killed) */
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "workload_common.h"

/* System-call pairs per sys_loop call: a few milliseconds. */
#define SLICE_CALLS 5000ull

CHAIN_FN uint64_t sys_loop(uint64_t calls, int fd) {
    unsigned char buf[256];
    uint64_t acc = 0;
    for (uint64_t i = 0; i < calls; i++) {
        acc += (uint64_t)syscall(SYS_getppid);
        acc += (uint64_t)syscall(SYS_read, fd, buf, sizeof buf);
        acc += buf[i & 255];
    }
    return acc;
}

CHAIN_FN uint64_t sys_outer(uint64_t calls, int fd) {
    uint64_t r = sys_loop(calls, fd);
    workload_sink = r; /* use of the result: no tail call */
    return r + 1;
}

int main(int argc, char **argv) {
    uint64_t deadline = deadline_from_args(argc, argv);
    int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror("syscall_heavy: open /dev/zero");
        return 2;
    }
    uint64_t acc = 0;
    do {
        acc += sys_outer(SLICE_CALLS, fd);
        workload_sink = acc;
    } while (!expired(deadline));
    return 0;
}
