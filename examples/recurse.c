// recurse.c — deep recursion in an ordinary WASI command (_start).
//
//   recurse [depth=4000] [rounds=60000] [print every=6000]
//
// Each round descends `depth` frames of descend(), which cannot become a
// loop: every frame mixes its own value after the call returns, so the
// result depends on every frame. Every frame also runs a small loop before
// it calls deeper. The recursion lives on the wasm call stack only (no
// address of a local is taken, so the C shadow stack is not used). Every
// `every` rounds the deepest frame prints a line (an fd_write with the whole
// recursion below it) and the top prints the round's result:
//
//   recurse: depth 4000, 60000 rounds, a line every 6000
//     bottom of round 6000: <16 hex>
//   round 6000: <16 hex>
//   ...
//   recurse: done, digest <16 hex>
//
// The default takes about 3 s of CPU; `-- 4000 4000 400` about 0.2 s. Each
// frame takes about 48 bytes of wasmtime's native stack, so about 10 900
// frames fit in its default 512 KiB (max_wasm_stack); deeper traps with
// "call stack exhausted" (100 000 frames need about 5 MiB). The default
// depth leaves room for a transform that makes frames bigger.
// Deterministic: the output depends only on the arguments.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dULL;
    x ^= x >> 33;
    return x;
}

static unsigned print_round; // non-zero: the bottom of this round prints

// Kept out of descend(): printf's variadic arguments would otherwise give
// every frame of descend() a slot on the C shadow stack.
__attribute__((noinline)) static void print_bottom(uint64_t h) {
    printf("  bottom of round %u: %016llx\n", print_round, (unsigned long long)h);
    fflush(stdout);
}

__attribute__((noinline)) static uint64_t descend(uint32_t n, uint64_t x) {
    uint64_t h = x;
#pragma clang loop unroll(disable)
    for (uint32_t i = 0; i <= (n & 3); i++) // a real loop in every frame
        h = mix(h + n + i);
    if (n == 0) {
        if (print_round)
            print_bottom(h);
        return h;
    }
    uint64_t r = descend(n - 1, h);
    return mix(r ^ (x + n)); // needs this frame's x after the call
}

static unsigned long arg(int argc, char **argv, int i, unsigned long dflt) {
    if (argc <= i)
        return dflt;
    char *end;
    unsigned long v = strtoul(argv[i], &end, 10);
    if (*argv[i] == '\0' || *end != '\0') {
        fprintf(stderr, "recurse: argument %d is not a number: %s\n", i, argv[i]);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    uint32_t depth = (uint32_t)arg(argc, argv, 1, 4000);
    unsigned rounds = (unsigned)arg(argc, argv, 2, 60000);
    unsigned every = (unsigned)arg(argc, argv, 3, 6000);
    if (every == 0)
        every = 1;
    printf("recurse: depth %u, %u rounds, a line every %u\n", depth, rounds, every);
    fflush(stdout);
    uint64_t digest = 0x243f6a8885a308d3ULL;
    for (unsigned r = 1; r <= rounds; r++) {
        print_round = (r % every == 0) ? r : 0;
        uint64_t v = descend(depth, digest + r);
        digest = mix(digest ^ v);
        if (print_round) {
            printf("round %u: %016llx\n", r, (unsigned long long)v);
            fflush(stdout);
        }
    }
    printf("recurse: done, digest %016llx\n", (unsigned long long)digest);
    return 0;
}
