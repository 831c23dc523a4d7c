"""rounds.py [ROUNDS=10] [STATUS=0] [DEPTH=120]: deterministic rounds of work
for baton's tests of interpreters (python.wasm), one stdout line per round.

Each round descends DEPTH Python frames and does most of its work at the
bottom (an integer LCG loop, a small fib and some dict/str work), so points
fall with a deep interpreter stack below them. A sha256 chain ties every
round to all the rounds before it. Then it exits with STATUS. No clock, no
randomness, no hash-order dependence: the output is the same on every run.
"""
import hashlib
import sys


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def work(seed):
    x, acc = seed & 0x7FFFFFFF, 0
    for i in range(80000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc = (acc + (x >> 7) * (i | 1)) % 1000000007
    counts = {}
    for i in range(3000):
        x = (x * 48271) % 2147483647
        w = "k" + str(x % 251)
        counts[w] = counts.get(w, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return (acc + fib(17) + len(counts)) % 1000000007, top


def descend(depth, seed):
    if depth == 0:
        return work(seed)
    acc, top = descend(depth - 1, seed + depth)
    return (acc * 31 + depth) % 1000000007, top


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    status = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 120
    print(f"rounds.py: {rounds} rounds, depth {depth}", flush=True)
    chain = hashlib.sha256(b"baton").digest()
    for r in range(1, rounds + 1):
        acc, top = descend(depth, r)
        chain = hashlib.sha256(chain + f"{r} {acc} {top}".encode()).digest()
        print(f"round {r}/{rounds}: {acc} {top[0]}={top[1]} {chain.hex()[:16]}", flush=True)
    print(f"rounds.py: done, chain {chain.hex()}", flush=True)
    sys.exit(status)


main()
