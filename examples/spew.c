/*
 * spew.c — a step task that prints a lot: a fixed number of bytes of
 * output at every step.
 *
 * Shows: output far larger than a message of the protocol, for tests of
 * how output travels (a step of a task on an agent prints, the client is
 * away, the output waits on the agent and must all arrive, in order, once).
 *
 * Run:   baton run examples/spew.wasm -- 20 1048576 > out.txt   # 20 MiB
 *
 * Arguments: [steps = 10] [bytes per step = 65536]. Each step prints whole
 * lines of 64 bytes ("spew: step S line L" padded with dots), as many as fit
 * in the byte count, so the output of step S can be recomputed by anyone.
 */
#include <stdio.h>
#include <string.h>

#include "baton.h"

static long steps, per_step, step;

BATON_INIT {
    steps = baton_arg_long(1, 10);
    per_step = baton_arg_long(2, 65536);
    if (steps < 1 || per_step < 64) {
        fprintf(stderr, "usage: spew [steps >= 1] [bytes per step >= 64]\n");
        exit(2);
    }
}

BATON_STEP {
    char line[65];
    step++;
    for (long l = 0; l < per_step / 64; l++) {
        int n = snprintf(line, sizeof line, "spew: step %ld line %ld ", step, l);
        memset(line + n, '.', 63 - n);
        line[63] = '\n';
        line[64] = '\0';
        fputs(line, stdout);
    }
    baton_flush();
    if (step < steps)
        return BATON_CONTINUE;
    BATON_FINISH(0);
}
