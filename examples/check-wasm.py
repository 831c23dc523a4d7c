#!/usr/bin/env python3
"""Check that built example modules have the shape baton expects.

    python3 examples/check-wasm.py [-v] FILE.wasm...

For each module: every import comes from wasi_snapshot_preview1 (or is
baton.point, which marks a good place for a point), memory is
exported, and it is either a step task (exports baton_step of type
[] -> [i32], plus _initialize, and no _start) or a command (exports _start).
With -v, prints the imports and exports. Exits non-zero on any problem.
Standard library only: it reads the binary format directly.
"""
import sys

KINDS = {0: "func", 1: "table", 2: "memory", 3: "global"}
VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
            0x70: "funcref", 0x6F: "externref"}


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def byte(self):
        if self.pos >= self.end:
            raise ValueError("unexpected end of section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise ValueError("bad LEB128")

    def name(self):
        n = self.u32()
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8")

    def limits(self):
        flags = self.byte()
        self.u32()
        if flags & 1:
            self.u32()


def parse(data):
    if data[:8] != b"\0asm\1\0\0\0":
        raise ValueError("not a wasm module (bad magic/version)")
    r = Reader(data, 8)
    types, imports, exports, funcs = [], [], [], []
    n_imported_funcs = 0
    while r.pos < len(data):
        sid = r.byte()
        size = r.u32()
        s = Reader(data, r.pos, r.pos + size)
        if sid == 1:  # type
            for _ in range(s.u32()):
                if s.byte() != 0x60:
                    raise ValueError("bad func type")
                params = [VALTYPES.get(s.byte(), "?") for _ in range(s.u32())]
                results = [VALTYPES.get(s.byte(), "?") for _ in range(s.u32())]
                types.append((params, results))
        elif sid == 2:  # import
            for _ in range(s.u32()):
                mod, field, kind = s.name(), s.name(), s.byte()
                desc = None
                if kind == 0:
                    desc = s.u32()
                    n_imported_funcs += 1
                    funcs.append(desc)
                elif kind == 1:
                    s.byte()
                    s.limits()
                elif kind == 2:
                    s.limits()
                elif kind == 3:
                    s.byte()
                    s.byte()
                imports.append((mod, field, KINDS.get(kind, "?"), desc))
        elif sid == 3:  # function
            for _ in range(s.u32()):
                funcs.append(s.u32())
        elif sid == 7:  # export
            for _ in range(s.u32()):
                name, kind, idx = s.name(), s.byte(), s.u32()
                exports.append((name, KINDS.get(kind, "?"), idx))
        r.pos += size
    return types, imports, exports, funcs


def sig(types, funcs, idx):
    params, results = types[funcs[idx]]
    return "[%s] -> [%s]" % (", ".join(params), ", ".join(results))


def check(path, verbose):
    data = open(path, "rb").read()
    types, imports, exports, funcs = parse(data)
    problems = []
    for mod, field, kind, _ in imports:
        if mod != "wasi_snapshot_preview1" and (mod, field) != ("baton", "point"):
            problems.append("imports %s.%s (only wasi_snapshot_preview1 and baton.point allowed)" % (mod, field))
    ex = {name: (kind, idx) for name, kind, idx in exports}
    if ex.get("memory", ("",))[0] != "memory":
        problems.append("does not export its memory as 'memory'")
    if "baton_step" in ex:
        kind, idx = ex["baton_step"]
        if kind != "func" or sig(types, funcs, idx) != "[] -> [i32]":
            problems.append("baton_step is not a function [] -> [i32]")
        if "_initialize" not in ex:
            problems.append("step task without _initialize (build with -mexec-model=reactor)")
        if "_start" in ex:
            problems.append("step task also exports _start (build with -mexec-model=reactor)")
        shape = "step task"
    elif "_start" in ex:
        shape = "command"
    else:
        shape = "neither"
        problems.append("exports neither baton_step nor _start")
    status = "ok" if not problems else "FAIL"
    print("%-28s %-9s %6d bytes  %s" % (path, shape, len(data), status))
    for p in problems:
        print("    problem: " + p)
    if verbose:
        print("    imports: " + " ".join(f for _, f, _, _ in imports))
        print("    exports: " + " ".join(
            "%s%s" % (n, " " + sig(types, funcs, i) if k == "func" else " (%s)" % k)
            for n, k, i in exports))
    return not problems


def main(argv):
    verbose = "-v" in argv
    paths = [a for a in argv if a != "-v"]
    if not paths:
        print(__doc__.strip())
        return 2
    ok = True
    for p in paths:
        try:
            ok &= check(p, verbose)
        except (OSError, ValueError, IndexError) as e:
            print("%s: FAIL: %s" % (p, e))
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
