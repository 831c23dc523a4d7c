#!/usr/bin/env python3
"""Run a WASI command module under the PyPI `wasmtime` package and time `_start`.

    python3 benches/programs/bare.py [options] MODULE.wasm [-- ARGS...]

The baseline for baton's own numbers: plain wasmtime (Cranelift, compiled
code cached on disk with `config.cache = True`), no transform, no points.
Only the `_start` call is timed: compiling (or loading the cache),
instantiating and creating the WASI context are outside the clock. Each run
gets a fresh store and instance. Wall time is time.perf_counter(), CPU time is
time.process_time() of this process (all its threads).

The guest's stdout goes to a file (`--out`, default a file in the temporary
directory) so that the terminal does not skew the time; each run's output is
checked to be byte-identical to the first run's, and its sha256 is printed.

Options:
  --runs N        timed runs (default 3); the median is printed last
  --warmup N      untimed runs first (default 1)
  --dir HOST::GUEST   preopen a host directory (repeatable)
  --env K=V       an environment variable (repeatable; nothing is inherited)
  --stdin FILE    the guest's stdin (default: empty)
  --out FILE      the guest's stdout (default: $TMPDIR/bare-<module>.out)
  --err FILE      the guest's stderr (default: $TMPDIR/bare-<module>.err)
  --argv0 NAME    argv[0] (default: the module's file name)

Needs `pip install wasmtime` (a venv is fine). Prints one line per run:
  run 1/3: wall 3.412 s, cpu 3.409 s, exit 0, out 1234 bytes sha256 ab12...
and at the end:
  median: wall 3.412 s, cpu 3.409 s (3 runs after 1 warm-up)
"""
import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time

try:
    import wasmtime
except ImportError:
    sys.exit("bare.py: error: the Python package 'wasmtime' is missing "
             "(python3 -m venv /tmp/wt && /tmp/wt/bin/pip install wasmtime, then run with /tmp/wt/bin/python)")


def parse_args(argv):
    if "--" in argv:
        i = argv.index("--")
        argv, guest_args = argv[:i], argv[i + 1:]
    else:
        guest_args = None
    p = argparse.ArgumentParser(prog="bare.py", add_help=True,
                                description="Time _start of a WASI command under PyPI wasmtime.")
    p.add_argument("module")
    p.add_argument("args", nargs="*")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--stdin")
    p.add_argument("--out")
    p.add_argument("--err")
    p.add_argument("--argv0")
    a = p.parse_args(argv)
    if guest_args is not None:
        a.args = a.args + guest_args
    return a


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv):
    a = parse_args(argv)
    if not os.path.isfile(a.module):
        sys.exit(f"bare.py: error: no such module: {a.module}")
    base = os.path.basename(a.module)
    tmp = tempfile.gettempdir()
    out = a.out or os.path.join(tmp, f"bare-{base}.out")
    err = a.err or os.path.join(tmp, f"bare-{base}.err")
    dirs = []
    for d in a.dir:
        host, sep, guest = d.partition("::")
        if not sep or not host or not guest:
            sys.exit(f"bare.py: error: --dir wants HOST::GUEST, got {d!r}")
        dirs.append((host, guest))
    env = []
    for e in a.env:
        k, sep, v = e.partition("=")
        if not sep:
            sys.exit(f"bare.py: error: --env wants K=V, got {e!r}")
        env.append((k, v))

    config = wasmtime.Config()
    config.cache = True
    engine = wasmtime.Engine(config)
    t0 = time.perf_counter()
    module = wasmtime.Module.from_file(engine, a.module)
    print(f"compile (or cache load): {time.perf_counter() - t0:.3f} s", file=sys.stderr)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()

    first_digest = None
    walls, cpus = [], []
    total = a.warmup + a.runs
    for i in range(total):
        wasi = wasmtime.WasiConfig()
        wasi.argv = [a.argv0 or base] + list(a.args)
        wasi.env = env
        for host, guest in dirs:
            wasi.preopen_dir(host, guest)
        if a.stdin:
            wasi.stdin_file = a.stdin
        wasi.stdout_file = out
        wasi.stderr_file = err
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        instance = linker.instantiate(store, module)
        start = instance.exports(store)["_start"]
        code = 0
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            start(store)
        except wasmtime.ExitTrap as e:
            code = e.code
        except wasmtime.Trap as e:
            sys.exit(f"bare.py: error: the module trapped: {e}")
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        del instance, start, store  # closes the output files
        digest = sha256_of(out)
        size = os.path.getsize(out)
        if first_digest is None:
            first_digest = digest
        elif digest != first_digest:
            sys.exit(f"bare.py: error: run {i + 1} wrote different output (sha256 {digest}, first {first_digest})")
        if i < a.warmup:
            label = f"warm-up {i + 1}/{a.warmup}"
        else:
            label = f"run {i + 1 - a.warmup}/{a.runs}"
            walls.append(wall)
            cpus.append(cpu)
        print(f"{label}: wall {wall:.3f} s, cpu {cpu:.3f} s, exit {code}, "
              f"out {size} bytes sha256 {digest[:16]}", flush=True)
    print(f"output: {out} (stderr: {err})")
    if walls:
        print(f"median: wall {statistics.median(walls):.3f} s, cpu {statistics.median(cpus):.3f} s "
              f"({a.runs} runs after {a.warmup} warm-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
