// A plain-JavaScript benchmark for quickjs.wasm (about 3-5 s under wasmtime).
//
//     qjs --std bench.js [scale=50]
//
// Recursion, an integer loop, and string/object work; the output is the same
// on every run (no clock, no Math.random). `scale` multiplies the work: 1
// takes a fraction of a second. The same computation as bench.py: for the
// same scale the round lines are identical (the default scales differ).
"use strict";

function fib(n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

function deepSum(depth) {
  // recursion that goes deep as well as wide (only 100 frames: quickjs.wasm
  // has a 67 KiB C stack and no overflow check, see scripts/PROGRAMS.md)
  function walk(n) {
    return n === 0 ? 1 : 1 + walk(n - 1);
  }
  let s = 0;
  for (let d = 0; d < depth; d++) s += walk(d);
  return s;
}

function integerLoop(n, seed) {
  // the same LCG as bench.py; BigInt-free: the product is split so every
  // intermediate stays below 2^53
  let x = 12345 + seed, acc = 0;
  for (let i = 0; i < n; i++) {
    const lo = (x & 0xffff) * 1103515245, hi = ((x >>> 16) * 1103515245) % 0x8000;
    x = (lo + hi * 0x10000 + 12345) % 0x80000000;
    acc = (acc + (x >>> 7) * (i | 1)) % 1000000007;
  }
  return acc;
}

function words(n, seed) {
  const counts = new Map();
  const syll = ["ba", "to", "ne", "ri", "ku", "so", "la", "me"];
  let x = 7 + seed;
  for (let i = 0; i < n; i++) {
    x = (x * 48271) % 2147483647;
    let w = syll[x % 8] + syll[Math.floor(x / 8) % 8] + syll[Math.floor(x / 64) % 8];
    if (x & 1) w = w.toUpperCase();
    counts.set(w, (counts.get(w) || 0) + 1);
  }
  const top = [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, 3);
  return [counts.size, top.map(([k, v]) => `${k}=${v}`).join(",")];
}

function main() {
  const args = typeof scriptArgs !== "undefined" ? scriptArgs : [];
  const scale = args.length > 1 ? parseInt(args[1], 10) : 50;
  const out = (s) => { console.log(s); if (typeof std !== "undefined") std.out.flush(); };
  out(`bench.js: scale ${scale}`);
  let total = 0;
  for (let r = 0; r < scale; r++) {
    const f = fib(18 + (r % 3));
    const d = deepSum(100);
    const l = integerLoop(60000, r);
    const [n, top] = words(20000, r);
    total = (total * 31 + f + d + l + n) % 1000000007;
    out(`round ${r + 1}: fib ${f} deep ${d} loop ${l} words ${n} top ${top}`);
  }
  out(`bench.js: total ${total}`);
}

main();
