#!/usr/bin/env bash
# Fuzzing stage: builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined)
# and runs each for FUZZ_SECONDS (default 30) from a copy of its committed seed corpus
# (tests/fuzz/corpus/<name>), then prints how many inputs each ran. Fails on any crash,
# sanitizer report, invariant violation, timeout (10 s per input) or allocation over
# 256 MB; the failing input is left in build/hardening-fuzz/artifacts/.
#   bash .ci/hardening/fuzz.sh              # all targets, 30 s each
#   FUZZ_SECONDS=600 bash .ci/hardening/fuzz.sh state
# GRADCLIP_FUZZ_STRICT=1 also fails on the known, reported library bugs that the targets
# otherwise step over (tests/fuzz/invariants.hpp, tests/fuzz/stateful.hpp).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
seconds="${FUZZ_SECONDS:-30}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(kernels clip state)
dir="$root/build/hardening-fuzz"

bash .ci/install-deps clang libclang-rt-14-dev
mkdir -p "$dir"
cmake -S tests/fuzz -B "$dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DGRADCLIP_FUZZ=ON >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
fuzzers=()
for t in "${targets[@]}"; do fuzzers+=("gradclip_fuzz_$t"); done
log "building ${fuzzers[*]}"
cmake --build "$dir" -j "$jobs" --target "${fuzzers[@]}"

summary=()
for t in "${targets[@]}"; do
    work="$dir/corpus-$t"
    rm -rf "$work"
    mkdir -p "$work" "$dir/artifacts"
    cp tests/fuzz/corpus/"$t"/* "$work"/
    log "fuzzing $t for ${seconds} s"
    set +e
    "$dir/gradclip_fuzz_$t" "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=256 -max_len=16384 -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t-" \
        >"$dir/fuzz-$t.log" 2>&1
    rc=$?
    set -e
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz-$t.log" | tail -1)"
    corpus="$(find "$work" -type f | wc -l)"
    summary+=("$(printf '%-8s %9s inputs ran, corpus %s files, exit %s' "$t" "${runs:-?}" "$corpus" "$rc")")
    if [ "$rc" -ne 0 ]; then
        grep -A5 -E "invariant violated|ERROR: (AddressSanitizer|libFuzzer|UndefinedBehaviorSanitizer)|runtime error" \
            "$dir/fuzz-$t.log" | head -40 || tail -40 "$dir/fuzz-$t.log"
        printf '%s\n' "${summary[@]}"
        log "fuzz target $t FAILED; input in $dir/artifacts/"
        exit 1
    fi
done
printf '%s\n' "${summary[@]}"
