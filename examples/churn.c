/*
 * churn.c — a large state (64 MiB by default) of which every step dirties
 * a fixed number of scattered 4 KiB pages (64 by default), with about half
 * a millisecond of computing per step.
 *
 * Shows: what a point costs when steps are short and memory is big. A step
 * changes 64 × 4 KiB = 256 KiB at most, spread over the whole array, so a
 * checkpoint that costs what the step changed stays small, while one that
 * looks at all of memory costs 64 MiB of work per point. It is the
 * workload of the "a point costs what the step changed" benchmark
 * (`cargo bench -p baton --bench churn`).
 *
 * Run:   baton run examples/churn.wasm --seed 7
 *        baton run examples/churn.wasm --seed 7 -- 8 200 16   # small and quick
 *
 * Arguments: [MiB = 64] [steps = 2000] [pages changed per step = 64]
 *            [work per step = 200000]
 * The array is allocated 4 KiB-aligned and filled once, in BATON_INIT.
 * Each step picks `pages` pages at pseudo-random (a generator seeded from
 * the task's random source, so collisions are rare but allowed), reads and
 * rewrites four words in each, then runs `work` rounds of an integer mixing
 * function (about 0.5 ms at the default, compiled by wasmtime on a current
 * x86-64). Everything it reads or computes is folded into a running hash.
 * Output: the parameters, the running hash every 500 steps, then the final
 * hash; e.g.
 *     churn: 64 MiB, 2000 steps, 64 pages of 4 KiB changed per step, work 200000
 *     step 500: hash 0123456789abcdef
 *     ...
 *     churn: done after 2000 steps, hash 0123456789abcdef
 * The hash depends on --seed. If the memory cannot be allocated (e.g.
 * --max-memory too low) it says so and exits with status 1.
 */
#include <stdio.h>

#include "baton.h"

#define PAGE_BYTES 4096
#define PAGE_WORDS (PAGE_BYTES / sizeof(uint64_t))

static uint64_t *words; /* the big state, PAGE_BYTES-aligned */
static size_t npages;
static long mib, steps, pages_per_step, work, step_no;
static uint64_t rng;  /* the page picker's state */
static uint64_t hash; /* folded from everything read and computed */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The next pseudo-random value of the page picker (splitmix64's stream). */
static uint64_t next(void) {
    rng += 0x9e3779b97f4a7c15ull;
    return splitmix64(rng);
}

static void fold(uint64_t v) { hash = splitmix64(hash ^ v); }

BATON_INIT {
    mib = baton_arg_long(1, 64);
    steps = baton_arg_long(2, 2000);
    pages_per_step = baton_arg_long(3, 64);
    work = baton_arg_long(4, 200000);
    if (mib < 1 || mib > 3072 || steps < 0 || pages_per_step < 0 ||
        work < 0) {
        fprintf(stderr, "usage: churn [MiB 1..3072] [steps >= 0] "
                        "[pages per step >= 0] [work per step >= 0]\n");
        exit(2);
    }
    size_t bytes = (size_t)mib * 1024 * 1024;
    npages = bytes / PAGE_BYTES;
    printf("churn: %ld MiB, %ld steps, %ld pages of 4 KiB changed per step, "
           "work %ld\n", mib, steps, pages_per_step, work);
    words = aligned_alloc(PAGE_BYTES, bytes);
    if (!words) {
        fprintf(stderr, "churn: cannot allocate %ld MiB "
                        "(is --max-memory too low?)\n", mib);
        exit(1);
    }
    uint64_t seed = baton_random_u64();
    size_t nwords = bytes / sizeof(uint64_t);
    for (size_t i = 0; i < nwords; i++)
        words[i] = splitmix64(seed + i);
    rng = baton_random_u64();
    hash = 0xcbf29ce484222325ull;
    baton_flush();
}

BATON_STEP {
    if (step_no < steps) {
        /* Dirty the pages: four words spread over each. */
        for (long p = 0; p < pages_per_step; p++) {
            uint64_t r = next();
            uint64_t *page = words + (r % npages) * PAGE_WORDS;
            size_t at = (size_t)(r >> 52) % (PAGE_WORDS / 4);
            for (size_t k = 0; k < 4; k++) {
                uint64_t *w = page + at + k * (PAGE_WORDS / 4);
                fold(*w);
                *w = splitmix64(*w ^ hash);
            }
        }
        /* The step's computing: a dependent chain of multiplies. */
        uint64_t x = splitmix64(hash + (uint64_t)step_no);
        for (long i = 0; i < work; i++) {
            x ^= x >> 29;
            x *= 0xbf58476d1ce4e5b9ull;
            x ^= x >> 32;
        }
        fold(x);
        step_no++;
        if (step_no % 500 == 0 && step_no < steps) {
            printf("step %ld: hash %016llx\n", step_no,
                   (unsigned long long)hash);
            baton_flush();
        }
    }
    if (step_no < steps)
        return BATON_CONTINUE;
    printf("churn: done after %ld steps, hash %016llx\n", step_no,
           (unsigned long long)hash);
    BATON_FINISH(0);
}
