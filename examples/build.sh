#!/bin/sh
# Rebuild every example task (and the hostile fixtures) from its C source.
#
#   examples/build.sh            # all .wasm files, plus the native nbody
#   CLANG=clang-15 examples/build.sh
#
# Needs clang 14+ with the wasm32 target, lld and wasi-libc. On Debian 12 /
# Ubuntu: apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32
#
# Step tasks are reactors (-mexec-model=reactor: exports _initialize and
# baton_step, no _start); hello.c, recurse.c, frames.c, tally.c and marks.c are
# ordinary commands (_start), the material for the suspend transform.
# Extra flags beyond the basic line:
#   -Wl,--stack-first   the C shadow stack sits at the bottom of memory, so an
#                       overflow traps instead of corrupting globals/heap;
#   -Wl,--strip-debug   drops DWARF (mostly wasi-libc's) but keeps the "name"
#                       section, so traps still show function names.
#
# The native nbody (for the execution benchmark) goes to
# ../target/native/nbody (git-ignored), built with the header's native driver:
#   clang-14 -O2 -DBATON_NATIVE -I../guest nbody.c -o ../target/native/nbody -lm
# It is never committed. Run it as: target/native/nbody [steps] [iterations].
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

CLANG=${CLANG:-clang-14}
if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "build.sh: error: '$CLANG' not found." >&2
    echo "  Install it (Debian/Ubuntu): apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32" >&2
    echo "  or point CLANG at another clang >= 14 with wasm32-wasi support: CLANG=clang-15 $0" >&2
    exit 1
fi

WASM="--target=wasm32-wasi -O2 -fuse-ld=lld -Wall -Wextra -Wl,--stack-first -Wl,--strip-debug"
STEP="$WASM -mexec-model=reactor -I../guest"

# A quick probe so a missing wasi-libc or lld gives a clear message.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdio.h>\nint main(void){puts("x");return 0;}\n' > "$probe/p.c"
if ! "$CLANG" $WASM "$probe/p.c" -o "$probe/p.wasm" 2> "$probe/err"; then
    cat "$probe/err" >&2
    echo "build.sh: error: $CLANG cannot build for wasm32-wasi." >&2
    echo "  Missing pieces are usually wasi-libc, lld-14 or libclang-rt-14-dev-wasm32 (apt-get install them)." >&2
    exit 1
fi

build_step() { # source in examples/ -> .wasm next to it
    echo "  step task  $1"
    "$CLANG" $STEP "$1" -o "${1%.c}.wasm" -lm
}

echo "building examples with $CLANG"
for src in pi.c render.c nbody.c bigstate.c churn.c countdown.c probe.c spew.c \
           hostile/spin.c hostile/membomb.c hostile/trap.c hostile/stackbomb.c; do
    build_step "$src"
done
for src in hello.c recurse.c frames.c tally.c marks.c; do
    echo "  command    $src"
    "$CLANG" $WASM "$src" -o "${src%.c}.wasm"
done

# Native nbody for the execution benchmark (never committed).
mkdir -p ../target/native
echo "  native     nbody.c -> target/native/nbody"
if ! "$CLANG" -O2 -DBATON_NATIVE -I../guest nbody.c -o ../target/native/nbody -lm; then
    echo "build.sh: warning: native nbody not built (a host C toolchain and libc headers are needed)" >&2
fi
# Check every module's imports and exports (needs python3; skipped without).
if command -v python3 >/dev/null 2>&1; then
    python3 check-wasm.py *.wasm hostile/*.wasm
else
    echo "build.sh: note: python3 not found, skipping check-wasm.py" >&2
fi
echo "done"
