// frames.c — functions with large stack frames in an ordinary WASI command.
//
//   frames [rounds=30000] [print every=3000]
//
// Each round calls four nested levels, each with an array of several KiB on
// the C stack (which wasm keeps in linear memory, below clang's
// __stack_pointer): level1 8 KiB of uint32_t, level2 8 KiB of double, level3
// 6 000 bytes, level4 8 KiB of uint64_t, 30 576 bytes of arrays in all. Each
// level fills its array in loops from its caller's data, calls the next
// level, and then reads its array again, so the array must survive the call
// intact; level4 writes a line (an fd_write with all four frames live) every
// `every` rounds. Every `every` rounds the top prints the checksums:
//
//   frames: 30000 rounds, 4 levels, 30576 bytes of arrays, a line every 3000
//     level4 of round 3000: <16 hex>
//   round 3000: checksum <16 hex>
//   ...
//   frames: done, checksum <16 hex>
//
// The default takes a few seconds of CPU (2.3 s); `-- 3000 300` about 0.25 s.
// Deterministic: the output depends only on the arguments.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned print_round; // non-zero: level4 prints in this round

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dULL;
    x ^= x >> 33;
    return x;
}

// An array's address escapes into this function, so the arrays below stay
// in memory (on the shadow stack) instead of being optimised away.
__attribute__((noinline)) static uint64_t sum_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

__attribute__((noinline)) static uint64_t level4(const uint8_t *up, size_t n, uint64_t seed) {
    uint64_t d[1024];
    uint64_t x = seed;
    for (size_t i = 0; i < 1024; i++) {
        x = mix(x + up[i % n]);
        d[i] = x;
    }
    for (int pass = 0; pass < 3; pass++)
        for (size_t i = 1; i < 1024; i++)
            d[i] ^= d[i - 1] >> (pass + 1);
    uint64_t h = sum_bytes(d, sizeof d);
    if (print_round) {
        printf("  level4 of round %u: %016llx\n", print_round, (unsigned long long)h);
        fflush(stdout);
    }
    return h;
}

__attribute__((noinline)) static uint64_t level3(const double *up, size_t n, uint64_t seed) {
    uint8_t c[6000];
    for (size_t i = 0; i < sizeof c; i++)
        c[i] = (uint8_t)((uint64_t)(up[i % n] * 1000.0) + i);
    uint64_t below = level4(c, sizeof c, seed ^ sum_bytes(c, 64));
    // read the array again after the call: it must be intact
    uint64_t h = sum_bytes(c, sizeof c);
    for (size_t i = 0; i < sizeof c; i += 7)
        c[i] ^= (uint8_t)below;
    return mix(h ^ below ^ sum_bytes(c, sizeof c));
}

__attribute__((noinline)) static uint64_t level2(const uint32_t *up, size_t n, uint64_t seed) {
    double b[1024];
    double acc = 0.0;
    for (size_t i = 0; i < 1024; i++) {
        acc = acc * 0.5 + (double)(up[(i * 7) % n] & 0xffff) / 65536.0;
        b[i] = acc;
    }
    uint64_t below = level3(b, 1024, mix(seed + 2));
    uint64_t h = sum_bytes(b, sizeof b);
    return mix(h + below);
}

__attribute__((noinline)) static uint64_t level1(uint64_t seed) {
    uint32_t a[2048];
    uint64_t x = seed;
    for (size_t i = 0; i < 2048; i++) {
        x = mix(x + i);
        a[i] = (uint32_t)x;
    }
    uint64_t below = level2(a, 2048, mix(seed + 1));
    uint64_t h = sum_bytes(a, sizeof a);
    // a second pass over the array after the call
    for (size_t i = 0; i < 2048; i += 3)
        a[i] += (uint32_t)below;
    return mix(h ^ sum_bytes(a, sizeof a) ^ below);
}

static unsigned long arg(int argc, char **argv, int i, unsigned long dflt) {
    if (argc <= i)
        return dflt;
    char *end;
    unsigned long v = strtoul(argv[i], &end, 10);
    if (*argv[i] == '\0' || *end != '\0') {
        fprintf(stderr, "frames: argument %d is not a number: %s\n", i, argv[i]);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    unsigned rounds = (unsigned)arg(argc, argv, 1, 30000);
    unsigned every = (unsigned)arg(argc, argv, 2, 3000);
    if (every == 0)
        every = 1;
    printf("frames: %u rounds, 4 levels, %zu bytes of arrays, a line every %u\n", rounds,
           (size_t)(2048 * 4 + 1024 * 8 + 6000 + 1024 * 8), every);
    fflush(stdout);
    uint64_t checksum = 0x13198a2e03707344ULL;
    for (unsigned r = 1; r <= rounds; r++) {
        print_round = (r % every == 0) ? r : 0;
        checksum = mix(checksum ^ level1(checksum + r));
        if (print_round) {
            printf("round %u: checksum %016llx\n", r, (unsigned long long)checksum);
            fflush(stdout);
        }
    }
    printf("frames: done, checksum %016llx\n", (unsigned long long)checksum);
    return 0;
}
