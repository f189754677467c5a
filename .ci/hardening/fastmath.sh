#!/usr/bin/env bash
# -ffast-math and -ffinite-math-only: non-finite detection must survive
# (tests/fastmath), with Clang (the test preset runs the same with GCC), or with
# the compilers named: `bash .ci/hardening/fastmath.sh g++ clang++`. Prints every row:
# REQUIRED rows must hold, "info" rows document what does not (README, -ffast-math).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
compilers=("$@")
[ "${#compilers[@]}" -gt 0 ] || compilers=(clang++)
for cxx in "${compilers[@]}"; do
    dir="$root/build/hardening-fastmath-$cxx"
    cmake -S tests/fastmath -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
    log "building with $cxx"
    cmake --build "$dir" -j "$jobs"
    for exe in gradclip_fastmath gradclip_finite_math; do
        log "$cxx: $exe"
        "$dir/$exe"
    done
done
