#!/usr/bin/env python3
"""Times commands side by side, interleaved, so that load drifting on a
shared machine hits every command alike (hyperfine runs each command's runs
back to back). Prints medians and minima of wall time and CPU (user+sys).

    benches/interleave.py ROUNDS NAME=COMMAND [NAME=COMMAND ...]

The first round is a warm-up and is not counted. Commands are split on
spaces (no shell); their output is discarded; a failing command stops the
run. /tmp/bench-journal is removed before every command, so commands may
journal there (`--state-dir /tmp/bench-journal`).

Example (BENCHMARKS.md, "The local path before and after"):

    benches/interleave.py 10 \\
        "new=target/release/baton run examples/bigstate.wasm -- 48 400 256" \\
        "old=/tmp/baton-old run examples/bigstate.wasm -- 48 400 256"
"""
import resource
import shutil
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    cmds = dict(a.split("=", 1) for a in sys.argv[2:])
    res = {n: [] for n in cmds}
    for r in range(rounds + 1):
        for name, cmd in cmds.items():
            shutil.rmtree("/tmp/bench-journal", ignore_errors=True)
            u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(cmd.split(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)
            t = time.perf_counter() - t
            u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
            if r:
                res[name].append((t, cpu))
    for name, v in res.items():
        wall = [x[0] for x in v]
        cpu = [x[1] for x in v]
        print(f"{name:<16} wall median {statistics.median(wall):.3f} s  "
              f"min {min(wall):.3f} s  cpu median {statistics.median(cpu):.3f} s  "
              f"(n={len(v)})")


if __name__ == "__main__":
    main()
