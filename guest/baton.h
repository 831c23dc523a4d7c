/*
 * baton.h — write baton step tasks in C.
 *
 * A *step task* is a WebAssembly/WASI module that does its work in small
 * steps. baton calls the exported function `baton_step` again and again;
 * every return is a *point*, where baton may capture the task's whole state
 * (linear memory, globals, host state such as files and the random
 * generator), store it, send it to another machine and continue there. The
 * result is byte-identical to an uninterrupted run, wherever and however
 * often the task was moved.
 *
 * This header is all you need; it is plain C99 over wasi-libc, with no
 * library to link. Build a task with:
 *
 *     clang --target=wasm32-wasi -mexec-model=reactor -O2 -fuse-ld=lld \
 *           -I path/to/baton/guest  task.c -o task.wasm
 *
 * (clang 14 or newer and wasi-libc; on Debian/Ubuntu: `apt-get install
 * clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32`.) Adding
 * `-Wl,--stack-first` is recommended: a C stack overflow then traps instead
 * of silently overwriting your globals. `-Wl,--strip-debug` makes the
 * module smaller and keeps function names for backtraces.
 *
 * Run it with:
 *
 *     baton run task.wasm --seed 7 -- arg1 arg2
 *
 * A minimal task:
 *
 *     #include <stdio.h>
 *     #include "baton.h"
 *
 *     static long i, n;                  // all state lives in globals
 *
 *     BATON_INIT {                       // once, when the task is created
 *         n = baton_arg_long(1, 1000);   // argv[1], default 1000
 *     }
 *
 *     BATON_STEP {                       // called until it returns BATON_DONE
 *         for (int k = 0; k < 100 && i < n; k++, i++)
 *             do_some_work(i);           // bounded work per step
 *         if (i < n)
 *             return BATON_CONTINUE;
 *         printf("did %ld items\n", n);
 *         BATON_FINISH(0);               // flush stdio, finish with status 0
 *     }
 *
 * ---------------------------------------------------------------------------
 * THE RULES (read these once)
 * ---------------------------------------------------------------------------
 *
 * 1. Keep all state in globals or on the heap. The wasm stack is empty
 *    between steps: local variables of `baton_step` do not survive to the
 *    next step. Anything in linear memory (globals, `static` variables,
 *    malloc'ed memory, stdio buffers) and in the virtual file system does.
 *
 * 2. Do bounded work per step. A point can only be taken between steps, so
 *    a step's length is how long baton may have to wait before it can move
 *    the task (and how much work is redone after a failover). Aim for
 *    roughly 1–100 ms per step. Steps far shorter than that cost overhead
 *    (baton checkpoints at points); a step longer than `--max-step-time` is
 *    stopped as an error. `baton_take()` below helps split a loop.
 *
 * 3. Finish with BATON_FINISH(status) (or `return baton_finish(status)`).
 *    It flushes every stdio stream (stdout, stderr and any FILE you have
 *    open) and then finishes the task. Returning BATON_DONE yourself is
 *    allowed, but then you must call `fflush(NULL)` first: output left in
 *    a stdio buffer when the task ends is lost. Calling `exit(n)` from a
 *    step also works (it flushes and finishes with status n); keep n in
 *    0..125, larger values are not portable exit statuses.
 *
 * 4. Output in a stdio buffer at a point is part of the state, so nothing
 *    is ever lost or doubled by a move, but it only becomes visible when
 *    flushed. Call `baton_flush()` (or `fflush(stdout)`) after progress
 *    lines that the user should see as they happen.
 *
 * 5. Be deterministic: the same module, arguments, environment, input
 *    files and seed must give the same output. baton makes this easy: the
 *    random source is a generator seeded by `--seed`, clocks are virtual
 *    (they advance deterministically, they do not tell the real time), the
 *    environment holds only what `--env` passes, files live in a virtual
 *    file system loaded from `--dir HOST::GUEST` and written back at the
 *    end, and stdin is read once, when the task is created. Do not try to
 *    get nondeterminism in through the back door (addresses of stack
 *    variables are fine: they are deterministic too).
 *
 * 6. No threads, no sockets, no signals. Files only under the directories
 *    preopened with `--dir`.
 *
 * 7. One-time set-up goes in BATON_INIT (it runs inside the module's
 *    `_initialize` export, once, when the task is created, never when it is
 *    restored from a checkpoint). Arguments, environment and preopened
 *    directories are already available there. Large allocations there are
 *    fine: memory is state like any other, and baton sends only the pages
 *    that changed since the last checkpoint.
 *
 * 8. Memory is limited by `--max-memory`: beyond it, malloc returns NULL
 *    (memory.grow fails), it does not trap. Check what malloc returns.
 *
 * Native builds: the same source also builds as an ordinary program for
 * comparison and debugging, e.g.
 *
 *     clang -O2 -DBATON_NATIVE -I path/to/baton/guest task.c -o task -lm
 *
 * With BATON_NATIVE defined on a non-wasm target this header supplies a
 * `main()` that runs BATON_INIT and then calls `baton_step` in a loop, like
 * baton does. (Natively there is no seed: `baton_random_*` uses the OS
 * entropy source.)
 */
#ifndef BATON_H
#define BATON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__wasm__)
#include <wasi/api.h>
#else
#include <unistd.h> /* getentropy: BSDs */
#if defined(__linux__) || defined(__APPLE__)
#include <sys/random.h> /* getentropy: glibc >= 2.25, musl, macOS */
#endif
#endif

/* The guest ABI version this header implements (see DESIGN §3). */
#define BATON_ABI_VERSION 1

/* Return values of baton_step: non-zero means "call me again". */
#define BATON_CONTINUE 1
#define BATON_DONE 0

#if defined(__GNUC__) || defined(__clang__)
#define BATON__UNUSED __attribute__((unused))
#else
#define BATON__UNUSED
#endif

/*
 * BATON_STEP { ... }
 *
 * Defines the exported step function `int baton_step(void)`. Its body must
 * return BATON_CONTINUE to be called again or finish the task (BATON_FINISH,
 * or BATON_DONE after flushing). Use it exactly once per module.
 */
int baton_step(void);
#if defined(__wasm__)
#define BATON_STEP \
    __attribute__((export_name("baton_step"))) int baton_step(void)
#else
#define BATON_STEP int baton_step(void)
#endif

/*
 * BATON_INIT { ... }
 *
 * Optional one-time set-up, run once when the task is created (in the
 * module's `_initialize`, before the first step), never on restore. Use it
 * at most once per module. It can read arguments (baton_arg*), the
 * environment (getenv) and open files under preopened directories. To fail
 * here, print a message and call exit(n): the task then finishes with
 * status n before any step runs.
 */
#if defined(__wasm__)
#define BATON_INIT \
    __attribute__((constructor)) static void baton__init(void)
#else
/* Natively the generated main() calls it (if defined) after recording
 * argc/argv; weak so that a task without BATON_INIT still links. */
#if defined(__GNUC__) || defined(__clang__)
void baton__init(void) __attribute__((weak));
#else
void baton__init(void);
#endif
#define BATON_INIT void baton__init(void)
#endif

/* ------------------------------------------------------------------------
 * Finishing
 * ------------------------------------------------------------------------ */

/* Flush every open stdio stream (stdout, stderr, FILEs). */
static inline BATON__UNUSED void baton_flush(void) { fflush(NULL); }

/*
 * Flush all stdio streams and finish the task with `status` (0..125).
 * For status 0 it returns BATON_DONE, which baton_step must return; for any
 * other status it does not return (it calls exit(status), i.e. WASI
 * proc_exit). Typical use: `BATON_FINISH(0);` or `return baton_finish(s);`.
 */
static inline BATON__UNUSED int baton_finish(int status) {
    fflush(NULL);
    if (status != 0)
        exit(status);
    return BATON_DONE;
}
#define BATON_FINISH(status) return baton_finish(status)

/* ------------------------------------------------------------------------
 * A good place for a point (programs without the step ABI)
 *
 * An ordinary program (a `main`) gets points wherever baton's work budget
 * runs out (--point-every). Calling baton_point() marks a place where a
 * point is cheap or natural (between two rounds of work, with little on
 * the stack): once half of the budget is spent, the point is taken at the
 * next mark instead of wherever the budget runs out. It never changes what
 * the program computes. In a step task, which has its points between
 * steps, it does nothing. Needs nothing else from this header.
 * ------------------------------------------------------------------------ */

#if defined(__wasm__)
__attribute__((import_module("baton"), import_name("point"))) void baton_point(void);
#else
static BATON__UNUSED void baton_point(void) {}
#endif

/* ------------------------------------------------------------------------
 * Arguments
 *
 * A reactor module has no main(argc, argv); these fetch the arguments
 * given after `--` on the baton command line. baton_argv()[0] is the
 * program name, as usual. The copy lives in the heap, so it is part of the
 * state and survives restores. Pointers stay valid for the task's lifetime.
 * ------------------------------------------------------------------------ */

static int baton__argc = -1;
static char **baton__argv;

static BATON__UNUSED void baton__load_args(void) {
    if (baton__argc >= 0)
        return;
#if defined(__wasm__)
    __wasi_size_t n = 0, bytes = 0;
    if (__wasi_args_sizes_get(&n, &bytes) == 0) {
        char **v = (char **)calloc(n + 1, sizeof(char *));
        char *buf = (char *)malloc(bytes ? bytes : 1);
        if (v && buf && __wasi_args_get((uint8_t **)v, (uint8_t *)buf) == 0) {
            v[n] = NULL;
            baton__argv = v;
            baton__argc = (int)n;
            return;
        }
        free(v);
        free(buf);
    }
#endif
    /* Natively main() fills these in; reaching here means no arguments. */
    static char *empty[1] = {NULL};
    baton__argv = empty;
    baton__argc = 0;
}

/* Number of arguments, including the program name (argv[0]). */
static inline BATON__UNUSED int baton_argc(void) {
    baton__load_args();
    return baton__argc;
}

/* The NULL-terminated argument vector. */
static inline BATON__UNUSED char **baton_argv(void) {
    baton__load_args();
    return baton__argv;
}

/* Argument i, or `def` if there are not that many arguments. */
static inline BATON__UNUSED const char *baton_arg(int i, const char *def) {
    baton__load_args();
    return (i >= 0 && i < baton__argc) ? baton__argv[i] : def;
}

/*
 * Argument i as an integer, or `def` if absent. A malformed number prints
 * a message and finishes the task with status 2 (usage error).
 */
static BATON__UNUSED long baton_arg_long(int i, long def) {
    const char *s = baton_arg(i, NULL);
    if (!s)
        return def;
    char *end;
    long v = strtol(s, &end, 0);
    if (*s == '\0' || *end != '\0') {
        fprintf(stderr, "%s: argument %d: '%s' is not a number\n",
                baton_arg(0, "task"), i, s);
        exit(2);
    }
    return v;
}

/* ------------------------------------------------------------------------
 * Random numbers
 *
 * Under baton, WASI random_get is a cryptographic generator seeded by
 * `baton run --seed N`: the stream is the same on every run with the same
 * seed, and its position is part of the task state, so a moved or restored
 * task continues the very same stream. getentropy() and anything built on
 * it draw from the same source.
 *
 * baton_random_u64/u32/double/below draw from a small buffer (in linear
 * memory, so part of the state) refilled 4 KiB at a time, which makes them
 * cheap enough to call per sample. baton_random_bytes asks the host
 * directly, for any length.
 * ------------------------------------------------------------------------ */

/* Fill buf with n random bytes. Returns 0, or an errno value on failure. */
static BATON__UNUSED int baton_random_bytes(void *buf, size_t n) {
#if defined(__wasm__)
    return (int)__wasi_random_get((uint8_t *)buf, (__wasi_size_t)n);
#else
    unsigned char *p = (unsigned char *)buf;
    while (n > 0) { /* getentropy gives at most 256 bytes per call */
        size_t k = n < 256 ? n : 256;
        if (getentropy(p, k) != 0)
            return -1;
        p += k;
        n -= k;
    }
    return 0;
#endif
}

#define BATON__POOL_WORDS 512 /* 4 KiB */
static uint64_t baton__pool[BATON__POOL_WORDS];
static unsigned baton__pool_next = BATON__POOL_WORDS;

/* A uniformly random 64-bit value. */
static BATON__UNUSED uint64_t baton_random_u64(void) {
    if (baton__pool_next == BATON__POOL_WORDS) {
        if (baton_random_bytes(baton__pool, sizeof baton__pool) != 0) {
            fprintf(stderr, "baton.h: random_get failed\n");
            fflush(NULL);
            abort();
        }
        baton__pool_next = 0;
    }
    return baton__pool[baton__pool_next++];
}

/* A uniformly random 32-bit value. */
static inline BATON__UNUSED uint32_t baton_random_u32(void) {
    return (uint32_t)(baton_random_u64() >> 32);
}

/* A uniformly random double in [0, 1), with 53 random bits. */
static inline BATON__UNUSED double baton_random_double(void) {
    return (double)(baton_random_u64() >> 11) * (1.0 / 9007199254740992.0);
}

/* A uniformly random integer in [0, n), without modulo bias; 0 if n == 0. */
static BATON__UNUSED uint64_t baton_random_below(uint64_t n) {
    if (n == 0)
        return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* multiple of n */
    uint64_t r;
    do
        r = baton_random_u64();
    while (r >= limit);
    return r % n;
}

/* ------------------------------------------------------------------------
 * Bounded work per step
 *
 * A cursor walks the items [0, total) of a long loop, a slice per step:
 *
 *     static baton_cursor rows = BATON_CURSOR(480);   // a global
 *
 *     BATON_STEP {
 *         uint64_t lo, hi;
 *         if (baton_take(&rows, 16, &lo, &hi)) {     // up to 16 rows
 *             for (uint64_t y = lo; y < hi; y++) render_row(y);
 *             return BATON_CONTINUE;
 *         }
 *         ... all rows done: write the result ...
 *         BATON_FINISH(0);
 *     }
 *
 * For tasks with several phases, keep the phase in a global too:
 *
 *     static enum { LOAD, WORK, REPORT } phase;
 *     BATON_STEP { switch (phase) { case LOAD: ...; phase = WORK; ... } }
 * ------------------------------------------------------------------------ */

typedef struct {
    uint64_t next; /* first item not yet taken */
    uint64_t end;  /* one past the last item */
} baton_cursor;

/* A cursor over [0, total), usable as a static initialiser. */
#define BATON_CURSOR(total) {0, (uint64_t)(total)}

/* Set a cursor to [0, total). */
static inline BATON__UNUSED void baton_cursor_reset(baton_cursor *c,
                                                    uint64_t total) {
    c->next = 0;
    c->end = total;
}

/*
 * Take the next slice of at most `budget` items: sets [*lo, *hi) and
 * returns its length, or returns 0 when all items have been taken.
 */
static inline BATON__UNUSED uint64_t baton_take(baton_cursor *c,
                                                uint64_t budget,
                                                uint64_t *lo, uint64_t *hi) {
    uint64_t left = c->end > c->next ? c->end - c->next : 0;
    uint64_t n = left < budget ? left : budget;
    *lo = c->next;
    *hi = c->next + n;
    c->next += n;
    return n;
}

/* Non-zero when every item has been taken. */
static inline BATON__UNUSED int baton_cursor_done(const baton_cursor *c) {
    return c->next >= c->end;
}

/* ------------------------------------------------------------------------
 * Native driver (only with -DBATON_NATIVE on a non-wasm target)
 * ------------------------------------------------------------------------ */

#if defined(BATON_NATIVE) && !defined(__wasm__)
int main(int argc, char **argv) {
    baton__argc = argc;
    baton__argv = argv;
    if (baton__init)
        baton__init();
    while (baton_step() != BATON_DONE) {
    }
    fflush(NULL);
    return 0;
}
#endif

#endif /* BATON_H */
