/*
 * membomb.c — HOSTILE FIXTURE: allocates until malloc returns NULL.
 *
 * Shows: that --max-memory makes memory.grow fail, so malloc returns NULL
 * and the task can cope; it must not trap. Allocates 1 MiB blocks, writes
 * one byte per block (so the memory is really used, without touching every
 * page), then prints how much it got and finishes with status 0.
 * WITHOUT --max-memory it grows to the wasm32 limit of 4 GiB: always give a
 * limit in tests.
 *
 * Run:   baton run examples/hostile/membomb.wasm --max-memory 64MiB
 *        baton run examples/hostile/membomb.wasm --max-memory 64MiB -- 16
 * Arguments: [MiB per step = 0, meaning all in the first step]
 * Output (with --max-memory 64MiB): "membomb: allocating 1 MiB blocks",
 * then "membomb: malloc returned NULL after N MiB" with N a little under
 * 64 (the module's own data, stack and malloc overhead take the rest),
 * exit status 0. With a per-step amount, a line per step too:
 * "membomb: step S: N MiB so far".
 */
#include <stdio.h>

#include "baton.h"

#define BLOCK (1024 * 1024)

static long per_step, step_no, got;
static void *last; /* chain the blocks so the allocations stay live */

BATON_INIT {
    per_step = baton_arg_long(1, 0);
    printf("membomb: allocating 1 MiB blocks\n");
    baton_flush();
}

BATON_STEP {
    step_no++;
    for (long i = 0; per_step <= 0 || i < per_step; i++) {
        void **block = malloc(BLOCK);
        if (!block) {
            printf("membomb: malloc returned NULL after %ld MiB\n", got);
            BATON_FINISH(0);
        }
        block[0] = last; /* one write per block */
        last = block;
        got++;
    }
    printf("membomb: step %ld: %ld MiB so far\n", step_no, got);
    baton_flush();
    return BATON_CONTINUE;
}
