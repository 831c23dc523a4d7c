/*
 * trap.c — HOSTILE FIXTURE: traps in a named function after a few steps.
 *
 * Shows: how baton reports a trap: distinct exit status and a wasm
 * backtrace with function names (the module keeps its "name" section).
 * The call chain at the trap is baton_step -> compute_answer -> explode.
 *
 * Run:   baton run examples/hostile/trap.wasm
 * Arguments: [normal steps before the trap = 2]
 * Output: "trap: step 1", "trap: step 2", "trap: about to trap in
 * explode()", then baton's trap report (unreachable instruction executed),
 * whose backtrace names explode and compute_answer.
 */
#include <stdio.h>

#include "baton.h"

static long normal, step_no;
static volatile int fuse = 1; /* keeps the compiler from seeing the trap coming */

__attribute__((noinline)) void explode(int depth) {
    if (fuse)
        __builtin_trap(); /* the wasm `unreachable` instruction */
    printf("not reached %d\n", depth);
}

__attribute__((noinline)) void compute_answer(void) {
    explode(42);
    fuse = 2; /* after the call, so it is not a tail call */
}

BATON_INIT { normal = baton_arg_long(1, 2); }

BATON_STEP {
    if (step_no < normal) {
        printf("trap: step %ld\n", ++step_no);
        baton_flush();
        return BATON_CONTINUE;
    }
    printf("trap: about to trap in explode()\n");
    baton_flush();
    compute_answer();
    return BATON_DONE; /* never reached */
}
