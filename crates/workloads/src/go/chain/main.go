// The Go chain workload: main → a → b → c, c spinning in a loop whose body
// calls mix, which the compiler inlines. a, b and c are noinline and use
// their callee's result after the call, so each is a real frame.
package main

import (
	"os"
	"runtime"
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
// Each call of a spins for a millisecond or two, so the clock is read
// rarely. The goroutine then yields: one that runs 10 ms without yielding
// is preempted by the runtime (a signal, a trip through the scheduler, and
// a sysmon thread that then polls every 20 µs), about 1 % of the CPU time
// spent outside the chain. With a single P, a voluntary yield costs a
// microsecond (with more, it wakes an idle thread to look for work each
// time). With "signals" as the second argument, Go's own CPU profiler runs
// at 1000 Hz: a SIGPROF handler interrupts the chain 1000 times a second.
func main() {
	ms := 0
	if len(os.Args) > 1 {
		ms, _ = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) > 2 && os.Args[2] == "signals" {
		runtime.SetCPUProfileRate(1000)
	}
	runtime.GOMAXPROCS(1)
	start := time.Now()
	for {
		sink += a(1 << 20)
		runtime.Gosched()
		if ms > 0 && time.Since(start) >= time.Duration(ms)*time.Millisecond {
			return
		}
	}
}
