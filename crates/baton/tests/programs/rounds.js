// rounds.js [ROUNDS=10] [STATUS=0] [DEPTH=60]: deterministic rounds of work
// for baton's tests of interpreters (quickjs.wasm, run as
// `qjs --std /app/rounds.js ...`), one stdout line per round.
//
// Each round descends DEPTH JS frames (QuickJS's C stack holds about 220
// of a trivial function: keep DEPTH <= 100) and does most of its work at
// the bottom (an integer LCG loop, a small fib and some Map/string work). An
// FNV-1a chain ties every round to all the rounds before it. Then it exits
// with STATUS. No clock, no randomness: the output is the same on every run.
// `std` is the global that `--std` provides.

function fib(n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

function work(seed) {
    let x = seed & 0x7fffffff, acc = 0;
    for (let i = 0; i < 400000; i++) {
        x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
        acc = (acc + (x >>> 7) * (i | 1)) % 1000000007;
    }
    const counts = new Map();
    for (let i = 0; i < 3000; i++) {
        x = (x * 48271) % 2147483647;
        const w = "k" + (x % 251);
        counts.set(w, (counts.get(w) || 0) + 1);
    }
    const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0];
    return [(acc + fib(17) + counts.size) % 1000000007, top];
}

function descend(depth, seed) {
    if (depth === 0) return work(seed);
    const [acc, top] = descend(depth - 1, seed + depth);
    return [(acc * 31 + depth) % 1000000007, top];
}

function fnv(h, s) {
    for (let i = 0; i < s.length; i++) {
        h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
    }
    return h;
}

const rounds = scriptArgs.length > 1 ? parseInt(scriptArgs[1], 10) : 10;
const status = scriptArgs.length > 2 ? parseInt(scriptArgs[2], 10) : 0;
const depth = scriptArgs.length > 3 ? parseInt(scriptArgs[3], 10) : 60;
print(`rounds.js: ${rounds} rounds, depth ${depth}`);
std.out.flush();
let chain = 2166136261;
for (let r = 1; r <= rounds; r++) {
    const [acc, top] = descend(depth, r);
    chain = fnv(chain, `${r} ${acc} ${top[0]}=${top[1]}`);
    print(`round ${r}/${rounds}: ${acc} ${top[0]}=${top[1]} ${chain.toString(16).padStart(8, "0")}`);
    std.out.flush();
}
print(`rounds.js: done, chain ${chain.toString(16).padStart(8, "0")}`);
std.out.flush();
std.exit(status);
