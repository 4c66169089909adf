/* dlopen_late: sleeps ~300 ms, then dlopen()s libdl_work.so and spends its
 * time in a function of it, called through a function pointer:
 *     main -> dl_work_outer -> dl_work_leaf
 * Built with: gcc -O2 -fomit-frame-pointer -g ... -ldl
 * Usage: dlopen_late [duration_ms [path/to/libdl_work.so]]
 *   duration counts from start (it includes the initial sleep); 0 or absent:
 *   run until killed. Default library: libdl_work.so beside the executable. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "workload_common.h"

#define DELAY_MS 300
#define SLICE_ITERS 2000000ull

typedef uint64_t (*work_fn)(uint64_t);

int main(int argc, char **argv) {
    uint64_t deadline = deadline_from_args(argc, argv);
    char path[PATH_MAX];
    if (argc >= 3) {
        snprintf(path, sizeof path, "%s", argv[2]);
    } else {
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n < 0) {
            perror("readlink /proc/self/exe");
            return 2;
        }
        path[n] = 0;
        char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
        snprintf(path + dir_len, sizeof path - dir_len, "libdl_work.so");
    }

    sleep_ms(DELAY_MS);

    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen_late: %s\n", dlerror());
        return 2;
    }
    work_fn work = (work_fn)dlsym(lib, "dl_work_outer");
    if (!work) {
        fprintf(stderr, "dlopen_late: %s\n", dlerror());
        return 2;
    }
    uint64_t acc = 0;
    do {
        acc += work(SLICE_ITERS); /* indirect call; result used */
        workload_sink = acc;
    } while (!expired(deadline));
    return 0;
}
