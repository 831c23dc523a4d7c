/*
 * hello.c — a plain WASI command (it has main/_start, no baton_step).
 *
 * Shows: that any ordinary WASI program runs under baton, as one step. It
 * prints its arguments, its environment (only what --env passes), a few
 * random numbers (from the seed), then reads stdin and prints its line
 * count, byte count and a 64-bit FNV-1a digest.
 *
 * Run:   echo hi | baton run examples/hello.wasm --seed 7 --env NAME=you -- a b
 *        baton run examples/hello.wasm -- exit 3 < /dev/null   # exits with 3
 *
 * Arguments: any; `exit N` as the first two arguments makes it exit with
 * status N after printing everything.
 * Output (for `--env NAME=you -- a b` with "hi\n" on stdin):
 *     hello from a WASI command
 *     argv[0] = hello.wasm           (the program name baton passes)
 *     argv[1] = a
 *     argv[2] = b
 *     env NAME=you
 *     random: 3 numbers drawn from the seeded source, in hex
 *     stdin: 1 lines, 3 bytes, fnv1a64 33734a193006ba70
 *     exit status 0
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("hello from a WASI command\n");
    for (int i = 0; i < argc; i++)
        printf("argv[%d] = %s\n", i, argv[i]);
    for (char **e = environ; e && *e; e++)
        printf("env %s\n", *e);

    uint64_t r[3];
    if (getentropy(r, sizeof r) != 0) {
        perror("getentropy");
        return 1;
    }
    printf("random: %016llx %016llx %016llx\n", (unsigned long long)r[0],
           (unsigned long long)r[1], (unsigned long long)r[2]);

    uint64_t h = 0xcbf29ce484222325ull, bytes = 0, lines = 0;
    unsigned char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            h = (h ^ buf[i]) * 0x100000001b3ull;
            lines += buf[i] == '\n';
        }
        bytes += n;
    }
    printf("stdin: %llu lines, %llu bytes, fnv1a64 %016llx\n",
           (unsigned long long)lines, (unsigned long long)bytes,
           (unsigned long long)h);

    int status = 0;
    if (argc >= 3 && strcmp(argv[1], "exit") == 0)
        status = atoi(argv[2]);
    printf("exit status %d\n", status);
    return status;
}
