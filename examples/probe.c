/*
 * probe.c — a step task that shows, at every step, what it sees of its
 * spec: arguments, environment, random numbers, clock and memory limit.
 *
 * Shows: a task whose output changes if any part of the task's spec
 * (--seed, --env, the arguments, --clock-start, --max-memory) is not what
 * it was started with, e.g. after a restore or a move to an agent. The
 * arguments and the environment are asked of the host (args_get,
 * environ_get) at every step, not remembered from the start; the random
 * bytes come from getentropy (random_get), the time from
 * clock_gettime(CLOCK_REALTIME) (clock_time_get). Each step also tries to
 * malloc the given sizes (touching every 64 KiB of what it gets) and frees
 * them at once, so a memory limit shows up as `fail`. Good for tests.
 *
 * Run:   baton run examples/probe.wasm --seed 3 --env A=1 -- 5 1000
 *        baton run examples/probe.wasm --max-memory 4MiB -- 5 65536,67108864
 *
 * Arguments: [steps = 10] [bytes to malloc per step = 0, a comma-separated
 * list allowed] [work per step = 100000 rounds of a mixing loop, ~0.3 ms]
 * Output: one line per step, then `probe: done after N steps`, e.g.
 *     probe: step 1/5 argv=["probe.wasm","5","1000"] env=["A=1"] rng=<16 hex>
 *       clock=0.000000000 alloc=[1000:ok] work=<16 hex>
 * (on one line). Exit status 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "baton.h"

#define MAX_SIZES 8

static long steps, work;              /* from the arguments */
static unsigned long sizes[MAX_SIZES];/* bytes to try to malloc per step */
static int n_sizes;
static long step_no;                  /* steps done so far */
static uint64_t mix = 0x9e3779b97f4a7c15ull; /* the work's running value */

/* Parses argv[2]: sizes separated by commas ("0" or absent: none). */
static void parse_sizes(const char *s) {
    while (s && *s) {
        char *end;
        unsigned long v = strtoul(s, &end, 0);
        if (end == s || (*end != ',' && *end != '\0') || n_sizes == MAX_SIZES) {
            fprintf(stderr, "probe: argument 2: '%s' is not a list of at most %d sizes\n",
                    s, MAX_SIZES);
            exit(2);
        }
        if (v > 0)
            sizes[n_sizes++] = v;
        s = *end ? end + 1 : end;
    }
}

BATON_INIT {
    steps = baton_arg_long(1, 10);
    parse_sizes(baton_arg(2, "0"));
    work = baton_arg_long(3, 100000);
    if (steps < 1 || work < 0) {
        fprintf(stderr, "usage: probe [steps >= 1] [bytes[,bytes...]] [work >= 0]\n");
        exit(2);
    }
}

/* Prints a WASI string list (arguments or environment) as ["a","b",...]. */
static void print_list(const char *name,
                       __wasi_errno_t (*sizes_get)(__wasi_size_t *, __wasi_size_t *),
                       __wasi_errno_t (*get)(uint8_t **, uint8_t *)) {
    __wasi_size_t n = 0, bytes = 0;
    char **v = NULL;
    char *buf = NULL;
    if (sizes_get(&n, &bytes) != 0 || !(v = calloc(n + 1, sizeof *v)) ||
        !(buf = malloc(bytes ? bytes : 1)) || get((uint8_t **)v, (uint8_t *)buf) != 0) {
        printf(" %s=<unreadable>", name);
    } else {
        printf(" %s=[", name);
        for (__wasi_size_t i = 0; i < n; i++)
            printf("%s\"%s\"", i ? "," : "", v[i]);
        printf("]");
    }
    free(v);
    free(buf);
}

BATON_STEP {
    step_no++;
    printf("probe: step %ld/%ld", step_no, steps);
    print_list("argv", __wasi_args_sizes_get, __wasi_args_get);
    print_list("env", __wasi_environ_sizes_get, __wasi_environ_get);

    unsigned char r[8];
    if (getentropy(r, sizeof r) != 0) {
        printf(" rng=<failed>");
    } else {
        printf(" rng=");
        for (size_t i = 0; i < sizeof r; i++)
            printf("%02x", r[i]);
    }

    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        printf(" clock=<failed>");
    else
        printf(" clock=%lld.%09ld", (long long)ts.tv_sec, (long)ts.tv_nsec);

    printf(" alloc=[");
    for (int i = 0; i < n_sizes; i++) {
        /* volatile: the compiler may not drop an unused malloc/free pair */
        unsigned char *volatile p = malloc(sizes[i]);
        if (p) {
            for (unsigned long k = 0; k < sizes[i]; k += 65536)
                p[k] = (unsigned char)k;
            p[sizes[i] - 1] = 1;
        }
        printf("%s%lu:%s", i ? "," : "", sizes[i], p ? "ok" : "fail");
        free(p);
    }
    printf("]");

    /* Deterministic compute, so that a step takes a little while. */
    uint64_t x = mix;
    for (long i = 0; i < work; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x += (uint64_t)i;
    }
    mix = x;
    printf(" work=%016llx\n", (unsigned long long)mix);
    baton_flush(); /* one line per point, shown as it happens */

    if (step_no < steps)
        return BATON_CONTINUE;
    printf("probe: done after %ld steps\n", steps);
    BATON_FINISH(0);
}
