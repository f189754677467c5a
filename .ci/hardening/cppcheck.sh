#!/usr/bin/env bash
# cppcheck over include/gradclip: one translation unit per public header (as tidy.sh),
# warnings, performance and portability checks. Eigen and the standard library are not
# analysed (not on the include path: missingIncludeSystem is suppressed). Suppressions of
# documented false positives live in .ci/hardening/cppcheck.supp, each with its reason.
#   bash .ci/hardening/cppcheck.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="$root/build/hardening-cppcheck"
bash .ci/install-deps cppcheck
mkdir -p "$dir/tus"
rm -f "$dir"/tus/*.cpp
while read -r header; do
    printf '#include <%s>\n' "$header" >"$dir/tus/$(echo "$header" | tr '/' '_').cpp"
done < <(cd include && find gradclip -name '*.hpp' | sort | grep -Ev '^gradclip/(torch|torch_distributed|mpi)\.hpp$')
log "cppcheck over $(ls "$dir"/tus/*.cpp | wc -l) headers"
cppcheck --std=c++17 --language=c++ --enable=warning,performance,portability --inline-suppr \
    --suppressions-list=.ci/hardening/cppcheck.supp --suppress=missingIncludeSystem \
    --error-exitcode=1 -j "$jobs" --quiet -I include --template='{file}:{line}: {severity}: {message} [{id}]' \
    "$dir"/tus/*.cpp
