#!/bin/sh
# Execution-overhead benchmark (issue 2, BENCHMARKS.md): the n-body example
# measured side by side in one run, four ways:
#
#   native    target/native/nbody           (clang-14 -O2, the same C source)
#   bare      bare_loop examples/nbody.wasm (wasmtime, default config, no checkpoints)
#   baton     baton run examples/nbody.wasm (no journal)
#   journal   baton run --state-dir DIR     (journal: a checkpoint at every point)
#
# and prints each one's time and the ratios against the budget
# (baton with journal <= 1.10x bare wasmtime, <= 1.30x native).
#
#   benches/exec.sh                  # nbody 100 200000, 5 runs each
#   RUNS=10 benches/exec.sh          # more runs
#   ARGS="50 400000" benches/exec.sh # other nbody arguments: [steps] [iterations/step]
#   BEFORE=/tmp/baton-old benches/exec.sh  # also another build of baton side by
#                                    # side (baton-before, journal-before):
#                                    # before/after comparisons in one run
#   ATTRIBUTE=1 benches/exec.sh      # also bare_loop with one of baton's engine
#                                    # settings each: bare+nan (NaN canonicalisation)
#                                    # and bare+epoch (epoch interruption)
#
# Builds what it needs (release baton, the bare_loop example, the native
# nbody with clang-14) and installs hyperfine with apt-get if it is missing;
# without hyperfine (no apt-get, no root) it falls back to a plain loop of
# RUNS timed runs per variant. Needs python3 for the table.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

ARGS=${ARGS:-"100 200000"}
RUNS=${RUNS:-5}
CLANG=${CLANG:-clang-14}
ATTRIBUTE=${ATTRIBUTE:-0}

say() { printf '%s\n' "exec.sh: $*" >&2; }

say "building (release): baton, bare_loop, native nbody"
cargo build --release --quiet -p baton --bin baton
cargo build --release --quiet -p baton-task --example bare_loop
mkdir -p target/native
"$CLANG" -O2 -DBATON_NATIVE -Iguest examples/nbody.c -o target/native/nbody -lm

if ! command -v hyperfine >/dev/null 2>&1; then
    say "hyperfine not found; trying apt-get install -y hyperfine"
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y hyperfine >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 && apt-get install -y hyperfine >/dev/null 2>&1; } ||
            say "could not install hyperfine; using a plain loop"
    else
        say "cannot install hyperfine (needs apt-get as root); using a plain loop"
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
journal="$work/journal"

# The variants: name, then command (no shell: hyperfine -N).
bare_cmd="target/release/examples/bare_loop examples/nbody.wasm $ARGS"
set -- \
    native "target/native/nbody $ARGS" \
    bare "$bare_cmd" \
    baton "target/release/baton run examples/nbody.wasm -- $ARGS" \
    journal "target/release/baton run --state-dir $journal examples/nbody.wasm -- $ARGS"
if [ -n "${BEFORE:-}" ]; then
    set -- "$@" \
        baton-before "$BEFORE run examples/nbody.wasm -- $ARGS" \
        journal-before "$BEFORE run --state-dir $journal examples/nbody.wasm -- $ARGS"
fi
if [ "$ATTRIBUTE" = 1 ]; then
    set -- "$@" \
        bare+nan "env BARE_NAN_CANON=1 $bare_cmd" \
        bare+epoch "env BARE_EPOCH=1 $bare_cmd"
fi

# Same output from every variant, or the comparison means nothing.
say "checking that every variant prints the same"
n=0
while [ $# -gt $n ]; do
    name=$1 cmd=$2
    shift 2
    rm -rf "$journal"
    $cmd > "$work/$name.out" 2> "$work/$name.err" ||
        { cat "$work/$name.err" >&2; say "error: $name failed"; exit 1; }
    if [ "$name" != native ] && ! cmp -s "$work/native.out" "$work/$name.out"; then
        say "error: the output of $name differs from native"
        exit 1
    fi
    case "$name" in journal*) say "$name: $(ls "$journal"/*/ | tr '\n' ' ')($(du -sh "$journal" | cut -f1))" ;; esac
    set -- "$@" "$name" "$cmd"
    n=$((n + 2))
done
rm -rf "$journal"
cat "$work/native.out" >&2

say "nbody $ARGS, $RUNS runs each (+1 warm-up), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
if command -v hyperfine >/dev/null 2>&1; then
    # -n NAME CMD pairs, rebuilt from the list.
    eval "set -- $(i=0; for a in "$@"; do
        if [ $((i % 2)) = 0 ]; then printf " -n '%s'" "$a"; else printf " '%s'" "$a"; fi
        i=$((i + 1)); done)"
    hyperfine -N --style basic --warmup 1 --runs "$RUNS" \
        --prepare "rm -rf $journal" \
        --export-json "$work/times.json" "$@" >&2
else
    # Fallback: RUNS timed runs per variant, interleaved so that load drifts
    # hit every variant alike; wall time per run, CPU time from rusage.
    python3 - "$work/times.json" "$RUNS" "$journal" "$@" <<'EOF'
import json, resource, shlex, shutil, subprocess, sys, time
out, runs, journal = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names, cmds = sys.argv[4::2], sys.argv[5::2]
wall = {n: [] for n in names}
cpu = {n: [0.0, 0.0] for n in names}
for r in range(runs + 1):
    for n, c in zip(names, cmds):
        shutil.rmtree(journal, ignore_errors=True)
        u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(shlex.split(c), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        t = time.perf_counter() - t
        u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r > 0:  # the first round is the warm-up
            wall[n].append(t)
            cpu[n][0] += (u1.ru_utime - u0.ru_utime) / runs
            cpu[n][1] += (u1.ru_stime - u0.ru_stime) / runs
json.dump({"results": [{"command": n, "times": wall[n], "user": cpu[n][0],
                        "system": cpu[n][1]} for n in names]}, open(out, "w"))
EOF
fi

# The table. Wall time is what the budget is about; CPU time (user+sys) is
# printed too because on a shared machine it is less disturbed by load.
python3 - "$work/times.json" "$ARGS" <<'EOF'
import json, statistics, sys
results = [(r["command"], r) for r in json.load(open(sys.argv[1]))["results"]]
names = [n for n, _ in results]
results = dict(results)
wall = {k: results[k]["times"] for k in names}
m = {k: statistics.mean(v) for k, v in wall.items()}
lo = {k: min(v) for k, v in wall.items()}
cpu = {k: results[k]["user"] + results[k]["system"] for k in names}
steps = int(sys.argv[2].split()[0])
print(f"nbody {sys.argv[2]}: wall time mean, sd, min over {len(wall['native'])} runs;"
      f" cpu = mean user+sys; per step = wall mean / {steps}")
print(f"{'variant':<11}{'wall s':>8}{'sd':>7}{'min s':>8}{'cpu s':>8}{'ms/step':>9}"
      f"{'/native':>9}{'/bare':>8}{'cpu/native':>12}{'cpu/bare':>10}")
for k in names:
    sd = statistics.stdev(wall[k]) if len(wall[k]) > 1 else 0.0
    print(f"{k:<11}{m[k]:>8.3f}{sd:>7.3f}{lo[k]:>8.3f}{cpu[k]:>8.3f}{1000 * m[k] / steps:>9.1f}"
          f"{m[k] / m['native']:>8.2f}x{m[k] / m['bare']:>7.2f}x"
          f"{cpu[k] / cpu['native']:>11.2f}x{cpu[k] / cpu['bare']:>9.2f}x")
print()
ok = lambda r, budget: "ok" if r <= budget else f"MISSED by {r / budget:.2f}x"
for k in ["baton", "journal"]:
    for what, t in (("wall", m), ("cpu ", cpu)):
        b, n = t[k] / t["bare"], t[k] / t["native"]
        print(f"{k:<8} {what}  vs bare wasmtime {b:5.2f}x (budget 1.10x: {ok(b, 1.10)})"
              f"   vs native {n:5.2f}x (budget 1.30x: {ok(n, 1.30)})")
print(f"journal  vs baton without journal: wall {m['journal'] / m['baton']:5.3f}x,"
      f" cpu {cpu['journal'] / cpu['baton']:5.3f}x (the cost of a checkpoint at every point)")
print(f"(ratios of wall minima: journal/bare {lo['journal'] / lo['bare']:.2f}x,"
      f" journal/native {lo['journal'] / lo['native']:.2f}x)")
for k in ["baton", "journal"]:
    b = k + "-before"
    if b in m:
        print(f"{k:<8} this build vs {b}: wall {m[k] / m[b]:5.3f}x, cpu {cpu[k] / cpu[b]:5.3f}x,"
              f" wall minima {lo[k] / lo[b]:5.3f}x")
EOF
