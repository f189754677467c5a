#!/usr/bin/env bash
# ThreadSanitizer over the threaded paths: the OpenMP test variant (test_threads.cpp and
# test_norm.cpp, OMP_NUM_THREADS=4: chunks of large buffers on threads), built with clang
# and LLVM's libomp (Debian libomp-14-dev). libomp is not TSan-instrumented; its own
# synchronisation is invisible to TSan, so reports inside the runtime are ignored
# (ignore_noninstrumented_modules) -- reports in gradclip's code are not.
#   bash .ci/hardening/tsan.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="$root/build/hardening-tsan"
bash .ci/install-deps clang libomp-14-dev
configure "$dir" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRADCLIP_SANITIZE=thread
build "$dir" gradclip_tests_openmp
export OMP_NUM_THREADS=4
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1"
run_ctest "$dir" gradclip_tests_openmp
