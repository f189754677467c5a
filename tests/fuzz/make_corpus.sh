#!/usr/bin/env bash
# Regenerates the committed seed corpora tests/fuzz/corpus/{kernels,clip,state}:
#   bash tests/fuzz/make_corpus.sh
# (Run it after changing the input format of a target or the state format of a
# clipper; commit the result.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${CXX:-c++}" -std=c++17 -O1 -I"$root/include" $(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3) \
    "$here/make_corpus.cpp" -o "$tmp/make_corpus"
rm -rf "$here/corpus"
"$tmp/make_corpus" "$here/corpus"
find "$here/corpus" -type f | wc -l | xargs echo "seed files:"
