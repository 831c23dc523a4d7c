"""A pure-Python benchmark for python.wasm (about 3-5 s under wasmtime).

    python bench.py [scale=20]

Recursion, an integer loop, and string/dict work; the output is the same on
every run (no clock, no randomness, no hash-order dependence). `scale`
multiplies the work: 1 takes a fraction of a second.
"""
import sys


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def deep_sum(depth):
    # recursion that goes deep as well as wide
    def walk(n):
        return 1 if n == 0 else 1 + walk(n - 1)
    return sum(walk(d) for d in range(depth))


def integer_loop(n, seed):
    x, acc = 12345 + seed, 0
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc = (acc + (x >> 7) * (i | 1)) % 1000000007
    return acc


def words(n, seed):
    counts = {}
    syll = ["ba", "to", "ne", "ri", "ku", "so", "la", "me"]
    x = 7 + seed
    for i in range(n):
        x = (x * 48271) % 2147483647
        w = syll[x % 8] + syll[(x >> 3) % 8] + syll[(x >> 6) % 8]
        if x & 1:
            w = w.upper()
        counts[w] = counts.get(w, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    text = ",".join(f"{k}={v}" for k, v in top)
    return len(counts), text


def main():
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"bench.py: scale {scale}", flush=True)
    total = 0
    for r in range(scale):
        f = fib(18 + r % 3)
        d = deep_sum(100)
        l = integer_loop(60000, r)
        n, top = words(20000, r)
        total = (total * 31 + f + d + l + n) % 1000000007
        print(f"round {r + 1}: fib {f} deep {d} loop {l} words {n} top {top}", flush=True)
    print(f"bench.py: total {total}")


main()
