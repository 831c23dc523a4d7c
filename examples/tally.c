// tally.c — an ordinary WASI command (_start) that uses everything a
// command sees: arguments, environment, stdin, stdout, stderr, a preopened
// directory and its exit status.
//
//   tally [rounds=40] [work=10000000] [--every K=5] [--out NAME] [--exit N]
//
// At start it prints its arguments, its environment (in the order given)
// and what it read from stdin (all of it, before the first round), and
// seeds a hash chain with all three. Each round runs `work` steps of the
// chain over a 64 KiB table on the heap and prints a line to stdout; every
// K rounds it prints a line to stderr. Then it prints the result; with
// `--out NAME` it also writes it to /out/NAME (run with a directory
// preopened as /out; without one it says so on stderr and goes on), and
// with `--exit N` it exits with status N.
//
//   tally: 3 arguments
//   argv[0] = tally.wasm ...
//   env K=V ...
//   stdin: L lines, B bytes, fnv1a64 <16 hex>
//   round 1/40: <16 hex>            (stdout, one per round)
//   tally: 5/40 rounds done          (stderr, every K rounds)
//   tally: result <16 hex> after 40 rounds of 10000000
//   tally: wrote /out/NAME           (with --out)
//   tally: exit status N             (with --exit)
//
// The default takes a few seconds of CPU; `-- 10 4000000` about 0.3 s.
// Deterministic: the output depends only on the arguments, the environment
// and stdin.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define TABLE_WORDS (64 * 1024 / 8)

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ULL;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dULL;
    x ^= x >> 33;
    return x;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static unsigned long number(const char *what, const char *s) {
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0') {
        fprintf(stderr, "tally: %s is not a number: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    unsigned long rounds = 40, work = 10000000, every = 5;
    const char *out_name = NULL;
    int exit_status = 0;
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out_name = argv[++i];
        } else if (strcmp(argv[i], "--exit") == 0 && i + 1 < argc) {
            exit_status = (int)number("--exit", argv[++i]);
        } else if (strcmp(argv[i], "--every") == 0 && i + 1 < argc) {
            every = number("--every", argv[++i]);
        } else if (positional == 0) {
            rounds = number("rounds", argv[i]);
            positional++;
        } else if (positional == 1) {
            work = number("work", argv[i]);
            positional++;
        } else {
            fprintf(stderr, "tally: unexpected argument: %s\n", argv[i]);
            return 2;
        }
    }
    if (every == 0)
        every = 1;

    uint64_t seed = 0xcbf29ce484222325ULL;
    printf("tally: %d arguments\n", argc);
    for (int i = 0; i < argc; i++) {
        printf("argv[%d] = %s\n", i, argv[i]);
        seed = fnv1a(seed, argv[i], strlen(argv[i]) + 1);
    }
    for (char **e = environ; e && *e; e++) {
        printf("env %s\n", *e);
        seed = fnv1a(seed, *e, strlen(*e) + 1);
    }
    // all of stdin, before any work
    unsigned long lines = 0, bytes = 0;
    uint64_t in_hash = 0xcbf29ce484222325ULL;
    unsigned char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        in_hash = fnv1a(in_hash, buf, n);
        bytes += n;
        for (size_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    }
    printf("stdin: %lu lines, %lu bytes, fnv1a64 %016llx\n", lines, bytes,
           (unsigned long long)in_hash);
    fflush(stdout);
    seed = mix(seed ^ in_hash);

    uint64_t *table = malloc(TABLE_WORDS * sizeof *table);
    if (!table) {
        fprintf(stderr, "tally: out of memory\n");
        return 1;
    }
    uint64_t h = seed;
    for (size_t i = 0; i < TABLE_WORDS; i++)
        table[i] = h = mix(h + i);

    for (unsigned long r = 1; r <= rounds; r++) {
        for (unsigned long i = 0; i < work; i++) {
            size_t k = (size_t)(h % TABLE_WORDS);
            h = mix(h ^ table[k]) + i;
            table[k] = h;
        }
        printf("round %lu/%lu: %016llx\n", r, rounds, (unsigned long long)h);
        fflush(stdout);
        if (r % every == 0)
            fprintf(stderr, "tally: %lu/%lu rounds done\n", r, rounds);
    }
    uint64_t result = fnv1a(h, table, TABLE_WORDS * sizeof *table);
    free(table);
    printf("tally: result %016llx after %lu rounds of %lu\n", (unsigned long long)result, rounds,
           work);

    if (out_name) {
        char path[512];
        snprintf(path, sizeof path, "/out/%s", out_name);
        FILE *f = fopen(path, "w");
        if (!f) {
            fprintf(stderr, "tally: cannot write %s (%s): run with a directory preopened as /out\n",
                    path, strerror(errno));
        } else {
            fprintf(f, "tally result %016llx\nrounds %lu\nwork %lu\nstdin %lu bytes\n",
                    (unsigned long long)result, rounds, work, bytes);
            if (fclose(f) != 0)
                fprintf(stderr, "tally: error writing %s: %s\n", path, strerror(errno));
            else
                printf("tally: wrote %s\n", path);
        }
    }
    if (exit_status)
        printf("tally: exit status %d\n", exit_status);
    fflush(stdout);
    return exit_status;
}
