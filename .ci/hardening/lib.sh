# Shared by the hardening stages (.ci/hardening/<stage>.sh); sourced, not run.
# Each stage builds into build/hardening-<stage>, only the targets it needs, with -j2,
# and prints its wall time at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$(pwd)"
jobs="${GRADCLIP_JOBS:-2}"
stage_start=$(date +%s)
stage_name="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

log() { printf '[%s +%ss] %s\n' "$stage_name" "$(($(date +%s) - stage_start))" "$*"; }

finish() {
    local rc=$?
    log "wall time $(($(date +%s) - stage_start)) s, exit $rc"
}
trap finish EXIT

# configure <build-dir> <cmake args...>: the top-level project, tests only (no examples,
# no header check, no consumer builds unless asked).
configure() {
    local dir="$1"
    shift
    cmake -S "$root" -B "$dir" -DGRADCLIP_BUILD_TESTS=ON -DGRADCLIP_BUILD_EXAMPLES=OFF \
        -DGRADCLIP_BUILD_BENCHMARKS=OFF -DGRADCLIP_VERIFY_HEADERS=OFF "$@" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; return 1; }
}

# existing_targets <build-dir> <target...>: those of the targets the build defines (the test
# list grows as files are wired in; a stage names every test target it wants).
existing_targets() {
    local dir="$1"
    shift
    local all
    # "... name" (Makefiles) or "name: phony" (Ninja)
    all="$(cmake --build "$dir" --target help 2>/dev/null | sed -n -e 's/^\.\.\. \([^ ]*\).*/\1/p' -e 's/^\([^ :]*\): .*/\1/p')"
    local t
    for t in "$@"; do
        if grep -qx "$t" <<<"$all"; then printf '%s\n' "$t"; fi
    done
}

# build <build-dir> <target...>: builds those that exist; prints which.
build() {
    local dir="$1"
    shift
    local targets
    mapfile -t targets < <(existing_targets "$dir" "$@")
    if [ "${#targets[@]}" -eq 0 ]; then
        echo "none of the targets $* exist in $dir" >&2
        return 1
    fi
    log "building ${targets[*]}"
    cmake --build "$dir" -j "$jobs" --target "${targets[@]}"
    built_targets=("${targets[@]}")
}

# run_ctest <build-dir> <target...>: runs the CTest tests named as the targets built.
run_ctest() {
    local dir="$1"
    shift
    local regex
    regex="^($(IFS='|'; echo "$*"))\$"
    log "ctest -R '$regex'"
    ctest --test-dir "$dir" -R "$regex" --output-on-failure -j "$jobs" --no-tests=error
}

