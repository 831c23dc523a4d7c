// marks.c — an ordinary WASI command (_start) that marks good places for a
// point with baton_point() (guest/baton.h).
//
//   marks [rounds=40] [work=2000000] [mark=1]
//
// Each round runs `work` steps of a hash chain over a small table and prints
// a line; with mark=1 it then calls baton_point(), so that baton takes its
// points between rounds (once half of a point's work budget is spent)
// rather than in the middle of one. The output does not depend on `mark`:
//
//   round 1/40: <16 hex>
//   ...
//   marks: done <16 hex>
//
// Deterministic: the output depends only on the arguments. The default
// takes about a second; `-- 30 20000` a few milliseconds.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../guest/baton.h"

static uint64_t table[256];

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 40;
    long work = argc > 2 ? atol(argv[2]) : 2000000;
    int mark = argc > 3 ? atoi(argv[3]) : 1;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 256; i++)
        table[i] = (uint64_t)i * 0x9e3779b97f4a7c15ull;
    for (long r = 1; r <= rounds; r++) {
        for (long k = 0; k < work; k++) {
            h ^= table[(h >> 7) & 255];
            h *= 1099511628211ull;
            table[k & 255] += h;
        }
        printf("round %ld/%ld: %016llx\n", r, rounds, (unsigned long long)h);
        fflush(stdout);
        if (mark)
            baton_point();
    }
    printf("marks: done %016llx\n", (unsigned long long)h);
    return 0;
}
