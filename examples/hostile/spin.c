/*
 * spin.c — HOSTILE FIXTURE: a step that never returns.
 *
 * Shows: what --max-step-time is for. The first N steps (default 2) are
 * normal and print a line each; the next step loops forever.
 *
 * Run:   baton run examples/hostile/spin.wasm --max-step-time 500ms
 *        baton run examples/hostile/spin.wasm --max-step-time 1s -- 0
 * Arguments: [normal steps before spinning = 2]
 * Output: "spin: step 1", "spin: step 2", "spin: spinning forever now";
 * then baton must stop it with an error naming the --max-step-time limit.
 */
#include <stdio.h>

#include "baton.h"

static long normal, step_no;
static volatile uint64_t counter; /* volatile: the loop cannot be removed */

BATON_INIT { normal = baton_arg_long(1, 2); }

__attribute__((noinline)) static void spin_forever(void) {
    for (;;)
        counter++;
}

BATON_STEP {
    if (step_no < normal) {
        printf("spin: step %ld\n", ++step_no);
        baton_flush();
        return BATON_CONTINUE;
    }
    printf("spin: spinning forever now\n");
    baton_flush();
    spin_forever();
    return BATON_DONE; /* never reached */
}
