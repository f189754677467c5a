#!/usr/bin/env bash
# Valgrind memcheck over a subset of the unit tests (memcheck runs ~50x slower). Built
# for the baseline x86-64 (SSE2), never -march=native: valgrind 3.19 cannot run AVX-512.
# The subset (tags below): clipping, value clipping, forms, the stateful clippers and
# the strong-guarantee tests, in the SIMD build; clipping in the scalar build. Left out:
# tests whose long-double reference needs 80-bit range or precision ([norm], [auto_clip],
# [properties], and the cases tagged [long_double]): valgrind runs x87 long double
# arithmetic as 64-bit double, so those references overflow or lose the precision
# they check against, and the tests fail under valgrind only.
#   bash .ci/hardening/valgrind.sh
#   VALGRIND_TESTS='[clip]' bash .ci/hardening/valgrind.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash .ci/install-deps valgrind
# The test stage's build (build/test: RelWithDebInfo, baseline x86-64) when it is there,
# else a build of its own with the same settings.
if [ -x "$root/build/test/tests/gradclip_tests" ] && [ -x "$root/build/test/tests/gradclip_tests_scalar" ]; then
    dir="$root/build/test"
    built_targets=(gradclip_tests gradclip_tests_scalar)
    log "using the test stage's build in $dir"
else
    dir="$root/build/hardening-valgrind"
    configure "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRADCLIP_NATIVE=OFF
    build "$dir" gradclip_tests_scalar gradclip_tests
fi
# (Catch2 syntax: "," is or, "~" excludes; the property tests carry [clip] and [value] too.)
subset="${VALGRIND_TESTS:-[clip]~[properties],[value]~[properties],[forms],[zclip],[adagc],[loss_scale],[norm_stats]~[long_double],[strong],[bad_inputs]}"
scalar_subset="${VALGRIND_SCALAR_TESTS:-[clip]~[properties],[value]~[properties]}"
vg=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --track-origins=yes --quiet)
for exe in "${built_targets[@]}"; do
    tags="$subset"
    [ "$exe" = gradclip_tests_scalar ] && tags="$scalar_subset"
    log "valgrind $exe $tags"
    "${vg[@]}" "$dir/tests/$exe" "$tags" --reporter compact
done
