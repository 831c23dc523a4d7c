/*
 * countdown.c — the smallest useful step task: one line per step, then
 * finish with a chosen exit status.
 *
 * Shows: a step task finishing with a non-zero status through exit(n)
 * (BATON_FINISH flushes stdout first). Small and fast: good for tests.
 *
 * Run:   baton run examples/countdown.wasm              # 10 steps, status 0
 *        baton run examples/countdown.wasm -- 3 7       # 3 steps, status 7
 *
 * Arguments: [N = 10] [exit status = 0]; N steps (one if N is 0).
 * Output for `-- 3 7` (then exit status 7):
 *     countdown: 3
 *     countdown: 2
 *     countdown: 1
 *     countdown: liftoff, exit status 7
 */
#include <stdio.h>

#include "baton.h"

static long left;   /* steps still to count */
static long status; /* exit status at the end */

BATON_INIT {
    left = baton_arg_long(1, 10);
    status = baton_arg_long(2, 0);
    if (left < 0 || status < 0 || status > 125) {
        fprintf(stderr, "usage: countdown [N >= 0] [status 0..125]\n");
        exit(2);
    }
}

BATON_STEP {
    if (left > 0) {
        printf("countdown: %ld\n", left--);
        baton_flush();
    }
    if (left > 0)
        return BATON_CONTINUE;
    printf("countdown: liftoff, exit status %ld\n", status);
    BATON_FINISH((int)status);
}
