// cpp_templates: class templates plus a deep recursion. The only chain is
//     main -> Pipeline<Xorshift64>::run
//          -> Pipeline<Xorshift64>::recurse  (x 64, one frame per depth level)
//          -> Spinner<Xorshift64>::spin      (spins)
// All chain functions are static member functions of class templates, so
// their demangled names carry no return type:
//     Pipeline<Xorshift64>::run(unsigned long, unsigned long)
//     Pipeline<Xorshift64>::recurse(int, unsigned long, unsigned long)
//     Spinner<Xorshift64>::spin(unsigned long, unsigned long)
// Built with: g++ -O3 -fomit-frame-pointer -g
// Usage: cpp_templates [duration_ms]   (0 or absent: run until killed)
#include <cstdint>
#include <cstdlib>
#include <ctime>

// noinline keeps the frame; noipa forbids cloning (.constprop/.isra names)
// and identical-code folding. Tail calls are prevented at each call site by
// using the result after the call.
#define CHAIN_FN __attribute__((noinline, noipa))

namespace {
volatile std::uint64_t sink;

std::uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::uint64_t(ts.tv_sec) * 1000000000ull + std::uint64_t(ts.tv_nsec);
}
} // namespace

constexpr int kDepth = 64;
constexpr std::uint64_t kSliceIters = 2000000;

struct Xorshift64 {
    std::uint64_t state;
    explicit Xorshift64(std::uint64_t seed) : state(seed | 1) {}
    // Inlined into spin(): not a frame of its own.
    std::uint64_t next() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        return state;
    }
};

template <class Rng> struct Spinner {
    CHAIN_FN static std::uint64_t spin(std::uint64_t seed, std::uint64_t iters) {
        Rng rng(seed);
        std::uint64_t acc = 0;
        for (std::uint64_t i = 0; i < iters; i++)
            acc += rng.next();
        return acc;
    }
};

template <class Rng> struct Pipeline {
    // depth == kDepth on the first call; one frame per level down to 1.
    CHAIN_FN static std::uint64_t recurse(int depth, std::uint64_t seed, std::uint64_t iters) {
        std::uint64_t r;
        if (depth <= 1)
            r = Spinner<Rng>::spin(seed, iters);
        else
            r = recurse(depth - 1, seed * 31 + std::uint64_t(depth), iters);
        sink = r; // use of the result: no tail call
        return r ^ std::uint64_t(depth);
    }

    CHAIN_FN static std::uint64_t run(std::uint64_t seed, std::uint64_t iters) {
        std::uint64_t r = recurse(kDepth, seed, iters);
        sink = r;
        return r + 1;
    }
};

int main(int argc, char **argv) {
    std::uint64_t ms = argc >= 2 ? std::strtoull(argv[1], nullptr, 10) : 0;
    std::uint64_t deadline = ms == 0 ? 0 : now_ns() + ms * 1000000ull;
    std::uint64_t acc = 0;
    do {
        acc += Pipeline<Xorshift64>::run(acc, kSliceIters);
        sink = acc;
    } while (deadline == 0 || now_ns() < deadline);
    return 0;
}
