/*
 * stackbomb.c — HOSTILE FIXTURE: unbounded recursion.
 *
 * Shows: a stack overflow is a trap, never memory corruption or a crash of
 * baton. Two flavours:
 *   (default) "native": recursion that uses only the wasm call stack, so
 *             the engine's stack limit trips ("call stack exhausted").
 *   "shadow": each frame also puts a buffer on clang's shadow stack in
 *             linear memory; built with -Wl,--stack-first, so overflowing
 *             it runs below address 0 and traps as an out-of-bounds access.
 *
 * Run:   baton run examples/hostile/stackbomb.wasm
 *        baton run examples/hostile/stackbomb.wasm -- shadow
 * Arguments: [native | shadow]
 * Output: "stackbomb: recursing (native)" (or shadow), then baton's trap
 * report; "stackbomb: survived" would be a bug.
 */
#include <stdio.h>
#include <string.h>

#include "baton.h"

static volatile uint64_t sink;

__attribute__((noinline)) uint64_t recurse_native(uint64_t n) {
    if (n == UINT64_MAX) /* never true in practice; silences -Winfinite-recursion */
        return 0;
    /* Not a tail call: the addition happens after the call returns. */
    return recurse_native(n + 1) + (sink ^ n);
}

__attribute__((noinline)) uint64_t recurse_shadow(uint64_t n) {
    volatile char buf[512]; /* on the shadow stack: its address is taken */
    if (n == UINT64_MAX)
        return 0;
    memset((char *)buf, (int)n, sizeof buf);
    sink = (uint64_t)(uintptr_t)buf;
    return recurse_shadow(n + 1) + buf[n % sizeof buf];
}

BATON_STEP {
    const char *mode = baton_arg(1, "native");
    int shadow = strcmp(mode, "shadow") == 0;
    printf("stackbomb: recursing (%s)\n", shadow ? "shadow" : "native");
    baton_flush();
    sink = shadow ? recurse_shadow(0) : recurse_native(0);
    printf("stackbomb: survived\n");
    BATON_FINISH(1);
}
