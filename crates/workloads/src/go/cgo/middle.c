// The C frame between two Go frames: called from Go, calls back into Go.
#include <stdint.h>
#include "_cgo_export.h"

__attribute__((noinline)) uint64_t c_middle(uint64_t n)
{
    return goCallback(n) + 1;
}
