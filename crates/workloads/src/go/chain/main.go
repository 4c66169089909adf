// The Go chain workload: main → a → b → c, c spinning in a loop whose body
// calls mix, which the compiler inlines. a, b and c are noinline and use
// their callee's result after the call, so each is a real frame.
package main

import (
	"os"
	"strconv"
	"time"
)

var sink uint64

// mix is small enough to be inlined into c: its instructions carry c's
// inline tree entry.
func mix(x uint64) uint64 {
	x ^= x << 13
	x ^= x >> 7
	return x ^ x<<17
}

//go:noinline
func c(n int) uint64 {
	x := uint64(n) | 1
	for i := 0; i < n; i++ {
		x = mix(x)
	}
	return x
}

//go:noinline
func b(n int) uint64 {
	return c(n) + 1
}

//go:noinline
func a(n int) uint64 {
	return b(n) + 1
}

// Runs for the milliseconds given as the first argument (0: until killed).
// Each call of a spins for a few milliseconds, so the clock is read rarely.
func main() {
	ms := 0
	if len(os.Args) > 1 {
		ms, _ = strconv.Atoi(os.Args[1])
	}
	start := time.Now()
	for {
		sink += a(1 << 20)
		if ms > 0 && time.Since(start) >= time.Duration(ms)*time.Millisecond {
			return
		}
	}
}
