#!/usr/bin/env bash
# A GPU batch on binaries built on the development machine (no GPU there, nvcc is), so the
# device's time goes to tests and timings rather than to a 3-minute build. Runs every GPU test
# (one process per test, TEST_JOBS at a time, as `ctest -j` would), compute-sanitizer memcheck on
# MEMCHECK_FILTER, `bench gemm BENCH_ARGS` and optionally `bench gemm COMPRESSED_ARGS`. Falls back
# to scripts/gpu_check.sh (configure + build there) when the carried binaries do not start.
#
# Build and carry: `bash scripts/gpu_prebuild.sh` on the development machine writes
# .dev/prebuilt.tgz (stripped and compressed: ~22 MB, under the 64 MiB that travels); carry
# [".dev/prebuilt.tgz", ".gpu-deps"] (.dev/ is in .gitignore) and run this script there.
#
# Environment:
#   OUT              output folder (default ./gpu-out)
#   PREBUILT_TGZ     archive holding sparsa_gpu_tests and gpu_gemm (default .dev/prebuilt.tgz),
#                    unpacked into /tmp/sparsa-prebuilt
#   TEST_FILTER      gtest filter for the test step (default '*'); TESTS=0 skips it
#   TEST_JOBS        test processes at once (default 4)
#   MEMCHECK_FILTER  gtest filter run under memcheck (default '*GemmPicksAPathForEveryM')
#   BENCH_ARGS       arguments for `bench gemm` (BENCH=0 skips it); writes $OUT/gemm.json
#   COMPRESSED_ARGS  arguments for a second `bench gemm` (compressed patterns); $OUT/compressed.json
#   STEP_TIMEOUT     seconds each step may take (default 240), so one slow step cannot eat the call
#   GPU_DEPS_DEBS    as in gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_deps_env.sh
gpu_batch_start
bin=/tmp/sparsa-prebuilt
rm -rf "$bin" && mkdir -p "$bin" && tar xzf "${PREBUILT_TGZ:-.dev/prebuilt.tgz}" -C "$bin" \
  || echo "cannot unpack ${PREBUILT_TGZ:-.dev/prebuilt.tgz}"
limit=${STEP_TIMEOUT:-240}

cslt_lib=$(python3 -c 'import glob,site,os
for r in site.getsitepackages():
    for l in glob.glob(os.path.join(r,"nvidia","cusparselt","lib")): print(l); raise SystemExit' 2>/dev/null)
[ -n "$cslt_lib" ] && export LD_LIBRARY_PATH=$cslt_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "cuSPARSELt library: ${cslt_lib:-not found}"

step "carried binaries"
if ! "$bin/sparsa_gpu_tests" --gtest_list_tests > "$OUT/test-list.txt" 2> "$OUT/prebuilt-start.log" \
   || ! "$bin/gpu_gemm" --help > /dev/null 2>> "$OUT/prebuilt-start.log"; then
  cat "$OUT/prebuilt-start.log"
  echo "the carried binaries do not start here: building with scripts/gpu_check.sh instead"
  exec bash scripts/gpu_check.sh
fi
echo "$(grep -c '^  ' "$OUT/test-list.txt") tests in $bin/sparsa_gpu_tests"

# ---- tests: one process per test, as ctest runs them -------------------------------------------
if [ "${TESTS:-1}" != 0 ]; then
  step "GPU tests (${TEST_FILTER:-*}, ${TEST_JOBS:-4} at a time)"
  "$bin/sparsa_gpu_tests" --gtest_list_tests --gtest_filter="${TEST_FILTER:-*}" \
    | awk '/^[^ ]/ {suite=$1} /^  / {print suite $1}' > "$OUT/tests-selected.txt"
  mkdir -p "$OUT/tests"
  # shellcheck disable=SC2016
  timeout "$limit" xargs -P "${TEST_JOBS:-4}" -I{} sh -c \
    '"$0" --gtest_filter="$1" > "$2/tests/$1.log" 2>&1; echo "$? $1" >> "$2/tests-rc.txt"' \
    "$bin/sparsa_gpu_tests" {} "$OUT" < "$OUT/tests-selected.txt"
  total=$(wc -l < "$OUT/tests-selected.txt"); ran=$(wc -l < "$OUT/tests-rc.txt" 2>/dev/null || echo 0)
  skipped=$(grep -l '\[  SKIPPED \]' "$OUT"/tests/*.log 2>/dev/null | wc -l)
  failed=$(awk '$1 != 0 {print $2}' "$OUT/tests-rc.txt" 2>/dev/null)
  nfailed=$(printf '%s' "$failed" | grep -c . || true)
  echo "tests: $total selected, $ran finished, $(( ran - nfailed - skipped )) passed, $skipped skipped, $nfailed failed"
  for t in $failed; do echo "FAILED: $t"; tail -30 "$OUT/tests/$t.log"; status=1; done
  grep -l '\[  SKIPPED \]' "$OUT"/tests/*.log 2>/dev/null | sed 's|.*/||; s|\.log$||; s|^|skipped: |'
  [ "$ran" -eq "$total" ] || { echo "tests: $(( total - ran )) did not finish within ${limit} s"; status=1; }
  for f in "$OUT"/tests/*.log; do echo "=== ${f##*/}"; cat "$f"; done > "$OUT/tests.log"
  rm -rf "$OUT/tests" "$OUT/tests-rc.txt"
fi

step "compute-sanitizer memcheck (${MEMCHECK_FILTER:-*GemmPicksAPathForEveryM})"
timeout "$limit" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
  "$bin/sparsa_gpu_tests" --gtest_filter="${MEMCHECK_FILTER:-*GemmPicksAPathForEveryM}" > "$OUT/memcheck.log" 2>&1
mc=$?
grep -E "^\[  (PASSED|FAILED) |ERROR SUMMARY|LEAK SUMMARY" "$OUT/memcheck.log"
[ $mc -eq 0 ] || { echo "memcheck FAILED ($mc)"; status=1; }

if [ "${BENCH:-1}" != 0 ]; then
  step "bench gemm ${BENCH_ARGS:-}"
  # shellcheck disable=SC2086
  timeout "$limit" "$bin/gpu_gemm" bench gemm ${BENCH_ARGS:-} --out "$OUT/gemm.json" > "$OUT/bench.log" 2>&1 \
    || { echo "bench FAILED or timed out"; status=1; }
  sed -n '/^summary/,$p' "$OUT/bench.log"
fi
if [ -n "${COMPRESSED_ARGS:-}" ]; then
  step "bench gemm ${COMPRESSED_ARGS}"
  # shellcheck disable=SC2086
  timeout "$limit" "$bin/gpu_gemm" bench gemm $COMPRESSED_ARGS --out "$OUT/compressed.json" > "$OUT/compressed.log" 2>&1 \
    || { echo "compressed bench FAILED or timed out"; status=1; }
  sed -n '/^summary/,$p' "$OUT/compressed.log"
fi
echo
echo "gpu_prebuilt_check: exit $status"
exit $status
