#!/usr/bin/env bash
# clang-tidy (checks in .clang-tidy: bugprone-*, performance-*, selected modernize-*) over
# every public header. Findings in include/gradclip are errors; documented false positives
# are suppressed in the code with NOLINT(<check>) and a reason, never here.
#   bash .ci/hardening/tidy.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="$root/build/hardening-tidy"
bash .ci/install-deps clang-tidy
mkdir -p "$dir/tus"
rm -f "$dir"/tus/*.cpp
flags=(-std=c++17 -I"$root/include" $(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3))
excluded='gradclip/torch.hpp|gradclip/torch_distributed.hpp'   # need libtorch
if ! mpi_flags="$(mpicxx --showme:compile 2>/dev/null)"; then
    excluded="$excluded|gradclip/mpi.hpp"
    mpi_flags=""
fi
# One translation unit that includes every public header (each header's own
# self-containment is the header check's job): one parse of Eigen instead of one per header.
tu="$dir/tus/all_headers.cpp"
(cd include && find gradclip -name '*.hpp' | sort | grep -Ev "^($excluded)\$") |
    sed 's/.*/#include <&>/' >"$tu"
count=$(wc -l <"$tu")
log "clang-tidy over $count headers"
# shellcheck disable=SC2086
clang-tidy --quiet "$tu" -- "${flags[@]}" $mpi_flags >"$dir/tidy.log" 2>&1 || true
# Findings, deduplicated.
grep -E '^/.*: (warning|error): ' "$dir/tidy.log" | sed -E ':a; s#/[^/]+/\.\./#/#; ta' | sort -u \
    >"$dir/findings.txt" || true
findings=$(wc -l <"$dir/findings.txt")
cat "$dir/findings.txt"
log "$findings distinct finding(s); full log: $dir/tidy.log"
[ "$findings" -eq 0 ]
