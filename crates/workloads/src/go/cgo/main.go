// The cgo workload: Go calls C (c_middle, in middle.c), which calls back
// into Go (goCallback), which spins in spin. callC, c_middle and spin are
// not inlined.
package main

/*
#include <stdint.h>
uint64_t c_middle(uint64_t n);
*/
import "C"

import (
	"os"
	"strconv"
	"time"
)

var sink uint64

//export goCallback
func goCallback(n C.uint64_t) C.uint64_t {
	return C.uint64_t(spin(uint64(n)) + 1)
}

//go:noinline
func spin(n uint64) uint64 {
	x := n | 1
	for i := uint64(0); i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func callC(n uint64) uint64 {
	return uint64(C.c_middle(C.uint64_t(n))) + 1
}

// Runs for the milliseconds given as the first argument (0: until killed).
func main() {
	ms := 0
	if len(os.Args) > 1 {
		ms, _ = strconv.Atoi(os.Args[1])
	}
	start := time.Now()
	for {
		sink += callC(1 << 20)
		if ms > 0 && time.Since(start) >= time.Duration(ms)*time.Millisecond {
			return
		}
	}
}
