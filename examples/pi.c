/*
 * pi.c — Monte Carlo estimate of π from baton's seeded random source.
 *
 * Shows: a step task using random_get (through baton_random_u64), with all
 * its state in a few globals and a fixed amount of work per step. The
 * output depends on --seed and on nothing else.
 *
 * Run:   baton run examples/pi.wasm --seed 7
 *        baton run examples/pi.wasm --seed 7 -- 200 50000   # steps, samples/step
 *
 * Arguments: [steps = 50] [samples per step = 20000]
 * Output: a progress line every 10 steps, then the estimate, e.g.
 *     pi: 50 steps x 20000 samples
 *     step 10/50: 200000 samples, pi ~ 3.14...
 *     ...
 *     pi ~ 3.14... after 1000000 samples (error ...)
 */
#include <math.h>
#include <stdio.h>

#include "baton.h"

static long steps, per_step;  /* from the arguments */
static long step_no;          /* steps done so far */
static uint64_t inside, total;/* samples inside the quarter circle / drawn */

BATON_INIT {
    steps = baton_arg_long(1, 50);
    per_step = baton_arg_long(2, 20000);
    if (steps < 1 || per_step < 1) {
        fprintf(stderr, "usage: pi [steps >= 1] [samples per step >= 1]\n");
        exit(2);
    }
    printf("pi: %ld steps x %ld samples\n", steps, per_step);
    fflush(stdout);
}

BATON_STEP {
    for (long i = 0; i < per_step; i++) {
        /* Two 32-bit coordinates from one 64-bit draw, in [0, 1). */
        uint64_t r = baton_random_u64();
        double x = (double)(uint32_t)r * (1.0 / 4294967296.0);
        double y = (double)(uint32_t)(r >> 32) * (1.0 / 4294967296.0);
        inside += (x * x + y * y < 1.0);
    }
    total += (uint64_t)per_step;
    step_no++;

    if (step_no % 10 == 0 && step_no < steps) {
        printf("step %ld/%ld: %llu samples, pi ~ %.6f\n", step_no, steps,
               (unsigned long long)total, 4.0 * (double)inside / (double)total);
        baton_flush(); /* show progress now, not at the end */
    }
    if (step_no < steps)
        return BATON_CONTINUE;

    double est = 4.0 * (double)inside / (double)total;
    printf("pi ~ %.6f after %llu samples (error %+.6f)\n", est,
           (unsigned long long)total, est - M_PI);
    BATON_FINISH(0);
}
