/*
 * bigstate.c — a task with a large state (48 MiB by default) of which each
 * step changes only a small part (256 KiB in 8 KiB chunks at random places).
 *
 * Shows: that state is memory, however big: the array is allocated and
 * filled once, in BATON_INIT, and lives in linear memory like any global.
 * Checkpoint deltas only need the pages a step changed, so moving this task
 * after the first checkpoint costs a few hundred KiB, not 48 MiB.
 *
 * Run:   baton run examples/bigstate.wasm --seed 7
 *        baton run examples/bigstate.wasm --seed 7 -- 8 20 64   # small and quick
 *
 * Arguments: [MiB = 48] [steps = 100] [KiB changed per step = 256]
 * Output: the parameters, a checksum of the whole array every 10 steps
 * (and after the last), then "bigstate: done"; e.g.
 *     bigstate: 48 MiB, 100 steps, 256 KiB changed per step
 *     step 0: checksum 0123456789abcdef
 *     step 10: checksum ...
 *     ...
 *     bigstate: done
 * The contents and the places changed depend on --seed. If the memory
 * cannot be allocated (e.g. --max-memory too low) it says so and exits
 * with status 1.
 */
#include <stdio.h>

#include "baton.h"

#define CHUNK_WORDS 1024 /* 8 KiB */

static uint64_t *words; /* the big state */
static size_t nwords, nchunks;
static long mib, steps, chunks_per_step, step_no;

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t checksum(void) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < nwords; i++)
        h = (h ^ words[i]) * 0x100000001b3ull;
    return h;
}

static void report(void) {
    printf("step %ld: checksum %016llx\n", step_no,
           (unsigned long long)checksum());
    baton_flush();
}

BATON_INIT {
    mib = baton_arg_long(1, 48);
    steps = baton_arg_long(2, 100);
    long kib = baton_arg_long(3, 256);
    if (mib < 1 || mib > 3072 || steps < 0 || kib < 8) {
        fprintf(stderr, "usage: bigstate [MiB 1..3072] [steps >= 0] "
                        "[KiB per step >= 8]\n");
        exit(2);
    }
    nwords = (size_t)mib * (1024 * 1024 / sizeof(uint64_t));
    nchunks = nwords / CHUNK_WORDS;
    chunks_per_step = kib / 8;
    printf("bigstate: %ld MiB, %ld steps, %ld KiB changed per step\n", mib,
           steps, chunks_per_step * 8);
    words = malloc(nwords * sizeof(uint64_t));
    if (!words) {
        fprintf(stderr, "bigstate: cannot allocate %ld MiB "
                        "(is --max-memory too low?)\n", mib);
        exit(1);
    }
    uint64_t seed = baton_random_u64();
    for (size_t i = 0; i < nwords; i++)
        words[i] = splitmix64(seed + i);
    report();
}

BATON_STEP {
    if (step_no < steps) {
        for (long c = 0; c < chunks_per_step; c++) {
            uint64_t *chunk = words + baton_random_below(nchunks) * CHUNK_WORDS;
            for (size_t i = 0; i < CHUNK_WORDS; i++)
                chunk[i] = splitmix64(chunk[i] ^ (uint64_t)step_no);
        }
        step_no++;
        if (step_no % 10 == 0 || step_no == steps)
            report();
    }
    if (step_no < steps)
        return BATON_CONTINUE;
    printf("bigstate: done\n");
    BATON_FINISH(0);
}
