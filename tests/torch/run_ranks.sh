#!/usr/bin/env bash
# Starts <world> processes of a c10d test or example, rank r of world w each, with a FileStore in
# a fresh temporary folder, and waits for all of them; fails if any fails (or runs past 120 s).
#   run_ranks.sh <world> <program> [args...]    runs: program [args...] <world> <rank> <store>
set -u
world=$1
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
pids=()
for ((rank = 0; rank < world; ++rank)); do
    timeout 120 "$@" "$world" "$rank" "$dir/store" &
    pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do
    wait "$pid" || rc=1
done
exit $rc
